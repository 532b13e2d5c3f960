//! Build script. Without the `kernel` feature (host library and tests) it does
//! nothing; with it, it configures the WDK link and generates the KS bindings.

#[cfg(not(feature = "kernel"))]
fn main() {}

#[cfg(feature = "kernel")]
fn main() {
    // Filled in by the kernel shell's binding generation.
}
