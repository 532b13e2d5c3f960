//! Build script. Without the `kernel` feature (host library and tests) it does
//! nothing; with it, it configures the WDK link and generates the KS bindings.
//!
//! With `kernel` this is the same code on every host: on Windows it finds the
//! installed WDK (or the eWDK's `WDKContentRoot`); the Linux cross-build
//! (`scripts/cross-build.sh`) gives it a synthetic WDK root through
//! `WDKContentRoot` and clang arguments through bindgen's standard
//! `BINDGEN_EXTRA_CLANG_ARGS_<target>` variable. Nothing here knows about
//! Linux.

#[cfg(not(feature = "kernel"))]
fn main() {}

#[cfg(feature = "kernel")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    kernel::configure()
}

#[cfg(feature = "kernel")]
mod kernel {
    use std::{env, error::Error, path::PathBuf};

    use bindgen::callbacks::{DeriveTrait, ImplementsTrait, ParseCallbacks};
    use wdk_build::{BuilderExt, Config};

    /// The header bindgen parses for the KS bindings. The include order is
    /// the one of Microsoft's AVStream samples: the kernel headers, then
    /// `windef.h` (ks.h needs `RECT` and friends), `unknown.h` (kernel-mode
    /// `IUnknown`: with it ks.h declares `IKsReferenceClock` and
    /// `KsPinGetReferenceClockInterface`), then ks.h and ksmedia.h.
    /// ksmedia.h names `TCHAR`, which kernel-mode headers do not always
    /// define; the guard is the one `winnt.h` uses for its own definition.
    const KS_WRAPPER_HEADER: &str = "\
#include <ntddk.h>
#include <windef.h>
#include <unknown.h>
#include <ks.h>
#ifndef _TCHAR_DEFINED
typedef CHAR TCHAR;
#define _TCHAR_DEFINED
#endif
#include <ksmedia.h>
";

    /// Name of the generated file in `OUT_DIR`, included by
    /// `src/kernel/bindings.rs`.
    const KS_BINDINGS_FILE: &str = "ks_bindings.rs";

    /// The types ks.h and ksmedia.h use that come from neither they nor
    /// wdk-sys (which is generated from ntifs.h/ntddk.h only): the
    /// minwindef.h/windef.h basics, the `TCHAR` of the wrapper header, and
    /// unknown.h's kernel-mode `IUnknown`.
    /// They are generated here too (`tagRECT`/`tagSIZE` are the structs
    /// behind `RECT`/`SIZE`).
    ///
    /// `BOOL` and `UINT` (`KS_DATARANGE_VIDEO`, `KSAUDIOENGINE_DESCRIPTOR`, ...)
    /// are minwindef.h types: the WDK's kernel headers, which wdk-sys is
    /// generated from on Windows, do not define them, so they must come
    /// from here. (mingw-w64's ntdef.h does define BOOL, as a macro for its
    /// own `WINBOOL`, which is listed so that the Linux build generates it
    /// too; the Linux cross-build checks that the bindings take no such type
    /// from wdk-sys: see `scripts/check_ks_bindings.py`.)
    const WINDEF_TYPES: &str = "BOOL|WINBOOL|UINT|BYTE|WORD|DWORD|FLOAT|COLORREF|TCHAR|RECT|tagRECT|SIZE|tagSIZE|IUnknown|IUnknownVtbl|PUNKNOWN";

    /// The ks.h / ksmedia.h structures declared with bitfields (bindgen
    /// would generate `unsafe` accessors for them); none is used by the
    /// driver, so they are generated as opaque blobs of the right size.
    /// (mingw-w64 declares two; the WDK's ksmedia.h one, the UVC metadata
    /// timestamp.) A header version with another fails the build below,
    /// naming it. An anonymous structure's nested types are items of their
    /// own (`<name>__bindgen_ty_N`), so they are named too.
    const BITFIELD_TYPES: &str = "(_?KSPROPERTY_SPPAL|_?KS_COLCON|_?KSSTREAM_UVC_METADATATYPE_TIMESTAMP)(__bindgen_ty_[0-9]+)*";

    /// Tells bindgen what the wdk-sys types (not generated here, so unknown
    /// to its derive analysis) implement: without this, no KS struct that
    /// has a wdk-sys field (`ULONG`, `GUID`, `PVOID`, ...) would be `Copy`
    /// or `Default`. Every wdk-sys type a KS struct embeds is plain C data:
    /// `Copy` holds, and an all-zero value is valid (null pointers, `None`
    /// callbacks, zero integers), which is what a "manual" `Default` is.
    #[derive(Debug)]
    struct WdkSysTypes;

    impl ParseCallbacks for WdkSysTypes {
        fn blocklisted_type_implements_trait(
            &self,
            _name: &str,
            derive_trait: DeriveTrait,
        ) -> Option<ImplementsTrait> {
            match derive_trait {
                DeriveTrait::Copy => Some(ImplementsTrait::Yes),
                DeriveTrait::Default => Some(ImplementsTrait::Manually),
                _ => None,
            }
        }
    }

    pub fn configure() -> Result<(), Box<dyn Error>> {
        println!("cargo::rerun-if-changed=build.rs");
        println!("cargo::rerun-if-env-changed=WDKContentRoot");

        // `wdk_build::configure_wdk_binary_build()`, keeping the `Config` for
        // the binding generation below.
        let config = Config::from_env_auto()?;
        config.configure_binary_build()?;

        generate_ks_bindings(&config)?;

        // ks.sys: KsInitializeDriver and the rest of the AVStream exports.
        println!("cargo::rustc-link-lib=ks");
        Ok(())
    }

    /// Generates Rust declarations for everything ks.h and ksmedia.h declare,
    /// and nothing else: every type they use from other headers (`GUID`,
    /// `DRIVER_OBJECT`, `IRP`, ...) is taken from `wdk_sys`, so values pass
    /// between the two without casts.
    fn generate_ks_bindings(config: &Config) -> Result<(), Box<dyn Error>> {
        let out_dir = PathBuf::from(env::var("OUT_DIR")?);

        let bindings = bindgen::Builder::wdk_default(config)?
            .header_contents("avscap_ks.h", KS_WRAPPER_HEADER)
            .allowlist_file(r".*[/\\][kK][sS]\.[hH]")
            .allowlist_file(r".*[/\\][kK][sS][mM][eE][dD][iI][aA]\.[hH]")
            .allowlist_type(WINDEF_TYPES)
            .allowlist_recursively(false)
            .parse_callbacks(Box::new(WdkSysTypes))
            // No `unsafe` code in the generated file: the crate's lints
            // forbid undocumented and multi-operation unsafe blocks, and a
            // forbidden lint cannot be allowed for one module. So no
            // `Default` impls (they zero through `MaybeUninit`; the driver
            // starts its tables from `boundary::zeroed` instead), and the
            // ksmedia.h structures with bitfields, which the driver does
            // not use, are opaque (no bitfield accessors).
            .derive_default(false)
            .opaque_type(BITFIELD_TYPES)
            .raw_line("use wdk_sys::*;")
            .generate()?;

        let text = bindings.to_string();
        if text.contains("unsafe {") || text.contains("unsafe{") {
            let with_bitfields: Vec<&str> = text
                .split("pub struct ")
                .skip(1)
                .filter(|item| {
                    item.split("\npub ")
                        .next()
                        .is_some_and(|body| body.contains("_bitfield_"))
                })
                .filter_map(|item| item.split_whitespace().next())
                .collect();
            return Err(format!(
                "the generated KS bindings contain `unsafe` code, which the crate's lints \
                 forbid; structures with bitfields: {with_bitfields:?} (add them to \
                 BITFIELD_TYPES in build.rs)"
            )
            .into());
        }
        std::fs::write(out_dir.join(KS_BINDINGS_FILE), text)?;
        Ok(())
    }
}
