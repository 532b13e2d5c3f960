//! What the driver's code costs per call: instructions executed inside
//! avscap.sys (and bytes ntoskrnl's `memcpy` / `memset` moved for it) per
//! `Process` call, per DPC and per work item, streaming a few frames at
//! 320x240 YUY2 and at 1920x1080 NV12 on the user (copy) path and the
//! kernel (own allocator) path. Prints the table (and leaves it in
//! `$AVSCAP_EMU_COVERAGE_DIR/cost.txt` for the test command's report), and
//! checks what the design promises: DISPATCH_LEVEL does no frame-sized
//! work (the DPC costs the same at both sizes, and far less than a frame's
//! bytes), the frame-sized work is done at PASSIVE_LEVEL.

mod common;

use std::fmt::Write as _;

use avscap::portable::video_format::{PixelFormat, VideoFormat};
use avscap_kernel_emu::cost::{spread, Cost, Sample};
use avscap_kernel_emu::coverage::DIR_ENV;
use avscap_kernel_emu::ks::state;
use avscap_kernel_emu::Config;
use common::{check_frames, format, ok, Path, Stream};

/// Frames streamed per run (a few: counting slows the emulation down).
const FRAMES: usize = 6;

struct Run {
    format: VideoFormat,
    path: Path,
    samples: Vec<Sample>,
}

/// Streams `FRAMES` frames with instruction counting on, checks them, and
/// returns the samples.
fn run(pixel: PixelFormat, width: u32, height: u32, path: Path) -> Run {
    let f = format(pixel, width, height);
    let mut s = Stream::open(Config::default(), f, path);
    ok(s.d.count_instructions(true), &s.d);
    s.set_state(state::PAUSE);
    for _ in 0..4 {
        assert!(s.queue_one());
    }
    s.set_state(state::RUN);
    let frames = s.stream(FRAMES, 4);
    check_frames(&f, &frames, 1, None);
    let samples = s.d.take_cost_samples();
    ok(s.d.count_instructions(false), &s.d);
    let leaks = s.teardown();
    assert!(leaks.is_empty(), "{leaks:#?}");
    Run {
        format: f,
        path,
        samples,
    }
}

fn label(r: &Run) -> String {
    format!(
        "{}x{} {}",
        r.format.width,
        r.format.height,
        format!("{:?}", r.format.pixel).to_uppercase()
    )
}

fn table(runs: &[Run]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "instructions executed in avscap.sys per call ({FRAMES} frames streamed after PAUSE -> RUN), \
         and bytes moved by memcpy/memset in the same call:"
    );
    let _ = writeln!(
        t,
        "  {:<18} {:<7} {:<10} {:>5} {:>11} {:>11} {:>11} {:>13} {:>11}",
        "format", "path", "call", "calls", "min", "median", "max", "bytes median", "frame bytes"
    );
    for r in runs {
        for kind in Cost::ALL {
            let Some((i, b)) = spread(&r.samples, kind) else {
                continue;
            };
            let _ = writeln!(
                t,
                "  {:<18} {:<7} {:<10} {:>5} {:>11} {:>11} {:>11} {:>13} {:>11}",
                label(r),
                format!("{:?}", r.path).to_lowercase(),
                kind.label(),
                i.count,
                i.min,
                i.median,
                i.max,
                b.median,
                r.format.layout().unwrap().image_size()
            );
        }
    }
    t
}

#[test]
fn dispatch_level_work_does_not_grow_with_the_frame() {
    let mut runs = Vec::new();
    for path in [Path::User, Path::Kernel] {
        runs.push(run(PixelFormat::Yuy2, 320, 240, path));
        runs.push(run(PixelFormat::Nv12, 1920, 1080, path));
    }
    let t = table(&runs);
    println!("{t}");
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        std::fs::write(std::path::Path::new(&dir).join("cost.txt"), &t).unwrap();
    }
    for pair in runs.chunks(2) {
        let (small, large) = (&pair[0], &pair[1]);
        let what = format!("{:?} path", small.path);
        let frame = u64::from(large.format.layout().unwrap().image_size());
        let get = |r: &Run, kind| {
            spread(&r.samples, kind)
                .unwrap_or_else(|| panic!("{what}: no {kind:?} call measured at {}\n{t}", label(r)))
        };
        let (dpc_small, _) = get(small, Cost::Dpc);
        let (dpc_large, dpc_large_bytes) = get(large, Cost::Dpc);
        assert!(
            dpc_large.median * 2 <= dpc_small.median * 3,
            "{what}: the DPC's median grew from {} to {} instructions with the frame\n{t}",
            dpc_small.median,
            dpc_large.median
        );
        assert!(
            dpc_large.max * 100 <= frame && dpc_large_bytes.max * 100 <= frame,
            "{what}: a DPC at {} executed {} instructions and moved {} bytes: not well under the frame's {frame} bytes\n{t}",
            label(large),
            dpc_large.max,
            dpc_large_bytes.max
        );
        // The frame-sized work (synthesis, the copy to a client's buffer)
        // is done at PASSIVE_LEVEL: per frame, the work items executed or
        // moved at least as much as the frame's size, growing with it.
        let passive = |r: &Run| {
            r.samples
                .iter()
                .filter(|s| s.kind != Cost::Dpc)
                .map(|s| s.instructions + s.bytes)
                .sum::<u64>()
        };
        let (per_small, per_large) = (passive(small), passive(large));
        assert!(
            per_large >= FRAMES as u64 * frame,
            "{what}: PASSIVE_LEVEL work at {} ({per_large} instructions + bytes) is less than {FRAMES} frames of {frame} bytes\n{t}",
            label(large)
        );
        assert!(
            per_large > 10 * per_small,
            "{what}: PASSIVE_LEVEL work did not grow with the frame ({per_small} -> {per_large})\n{t}"
        );
    }
}
