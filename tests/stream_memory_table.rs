//! The README's table of the memory a stream takes per format is computed
//! here, from the sizing code the driver runs (`StreamMemory`), and must
//! equal the README's copy: edit the code and this test shows the new table.
//! Every format's overhead (bytes reserved beyond the images the slots hold)
//! stays under one page per frame.

use std::fmt::Write as _;

use avscap::portable::stream_memory::StreamMemory;
use avscap::portable::video_format::DATA_RANGES;

const START: &str = "<!-- stream-memory-table:start -->";
const END: &str = "<!-- stream-memory-table:end -->";

fn mib(bytes: usize) -> String {
    #[allow(clippy::cast_precision_loss)]
    let m = bytes as f64 / f64::from(1u32 << 20);
    format!("{m:.2} MiB")
}

/// Frame slots a stream reserves at most: staging plus the allocator's.
const fn frames(m: &StreamMemory) -> u32 {
    m.staging.frames() + m.allocator.frames()
}

/// Bytes reserved beyond the images those slots hold, per slot.
const fn overhead_per_frame(m: &StreamMemory) -> usize {
    let images = frames(m) as usize * m.layout.image_size() as usize;
    (m.allocator_path_bytes() - images) / frames(m) as usize
}

#[test]
fn overhead_is_under_one_page_per_frame() {
    for f in &DATA_RANGES {
        let m = StreamMemory::for_format(f).unwrap();
        for plan in [m.staging, m.allocator] {
            assert_eq!(plan.frame_size(), m.layout.image_size(), "{f:?}");
            let images = plan.frames() as usize * m.layout.image_size() as usize;
            assert!(
                plan.bytes() >= images,
                "{f:?}: the buffer holds every frame"
            );
            assert!(
                plan.bytes() - images < plan.frames() as usize * 4096,
                "{f:?}: {} bytes for {} frames of {}",
                plan.bytes(),
                plan.frames(),
                m.layout.image_size()
            );
        }
        assert!(overhead_per_frame(&m) < 4096, "{f:?}");
    }
}

fn table() -> String {
    let mut out = String::from(
        "| format | size | image | staging (every stream) | allocator buffer (kernel-to-kernel only) | most per stream | frames | overhead per frame |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut seen = Vec::new();
    for f in &DATA_RANGES {
        let key = (f.pixel, f.width, f.height);
        if seen.contains(&key) {
            continue; // the frame rate does not change the memory
        }
        seen.push(key);
        let m = StreamMemory::for_format(f).unwrap();
        let _ = writeln!(
            out,
            "| {} | {}x{} | {} | {} | {} | {} | {} | {} B |",
            f.pixel.name().to_uppercase(),
            f.width,
            f.height,
            m.layout.image_size(),
            mib(m.copy_path_bytes()),
            mib(m.allocator.bytes()),
            mib(m.allocator_path_bytes()),
            frames(&m),
            overhead_per_frame(&m),
        );
    }
    out
}

#[test]
fn readme_memory_table_is_the_computed_one() {
    // A Windows checkout with `core.autocrlf` has CRLF line endings; the table
    // is compared line by line, whatever the checkout's line endings are.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .unwrap()
        .replace("\r\n", "\n");
    let start = readme
        .find(START)
        .expect("README has the table's start marker")
        + START.len();
    let end = readme.find(END).expect("README has the table's end marker");
    let expected = table();
    assert_eq!(
        readme[start..end].trim(),
        expected.trim(),
        "README's memory table is stale; the computed one is:\n{expected}"
    );
}
