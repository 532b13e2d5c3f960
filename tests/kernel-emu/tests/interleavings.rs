//! DPC / Process / state-change interleavings. Unicorn runs one CPU; the
//! kernel does not: while the driver runs at PASSIVE_LEVEL with no spin
//! lock held (Process, `SetDeviceState`, the delivery work item), the timer
//! DPC may run on another processor at any moment. The streaming-and-stop
//! scenario is run once per such moment (every import-call boundary the
//! clean run passes, bounded and deterministic), with the next timer
//! falling due and its DPC running right there. Every run must lose no
//! frame, complete none twice (a model rule), deliver the host core's
//! images, and keep Process restarted after each `STATUS_PENDING`.

mod common;

use std::collections::BTreeSet;

use avscap::portable::video_format::PixelFormat;
use avscap_kernel_emu::ks::{state, Completed, Origin};
use avscap_kernel_emu::machine::R;
use avscap_kernel_emu::session::LegacyFraming;
use avscap_kernel_emu::{Config, Driver};
use common::{format, Path};

/// Frames delivered before the stop.
const FRAMES: usize = 4;
/// Frames kept queued.
const DEPTH: usize = 3;

struct Run {
    /// Boundaries the run passed.
    boundaries: u64,
    /// Where the interleaved DPC ran, if it did.
    interleaved: Option<String>,
}

/// Streams `FRAMES` frames, then stops with frames in flight; checks every
/// frame queued completed exactly once and every full one is right.
///
/// On an error the driver is left as it is (its end-of-test unload is
/// skipped), so the error that stopped the scenario is the one reported,
/// with the driver's `DbgPrint` output, instead of whatever the unload of a
/// half-stopped stream then runs into.
fn scenario(config: Config, path: Path) -> R<Run> {
    let mut d = Driver::boot(config)?;
    let run = stream_and_stop(&mut d, path);
    if run.is_err() {
        d.disarm();
    }
    run.map_err(|e| format!("{e}\n--- DbgPrint ---\n{}", d.log()))
}

#[allow(clippy::too_many_lines)]
fn stream_and_stop(d: &mut Driver, path: Path) -> R<Run> {
    let f = format(PixelFormat::Yuy2, 320, 240);
    let size = f.layout().unwrap().image_size();
    let filter = d.create_filter()?;
    let pin = d
        .connect(filter, &f)?
        .map_err(|s| format!("pin Create returned {s:#x}"))?;
    let allocator = if path == Path::Kernel {
        let ex = d.allocator_framing_ex(pin)?;
        Some(
            d.create_allocator(pin, &LegacyFraming::from_ex(&ex))?
                .map_err(|s| format!("InitializeAllocator returned {s:#x}"))?,
        )
    } else {
        None
    };
    d.set_state(pin, state::RUN)?;
    let mut queued = Vec::new();
    let mut completed: Vec<Completed> = Vec::new();
    for _ in 0..DEPTH {
        queued.extend(common::queue_from(d, pin, size, allocator)?);
    }
    let mut delivered = 0;
    for _ in 0..4 * FRAMES {
        if delivered >= FRAMES {
            break;
        }
        d.advance(f.frame_interval)?;
        for c in d.take_completed(pin) {
            if c.data_used != size || c.flushed {
                return Err(format!(
                    "frame {} completed with DataUsed {} (flushed {}) while streaming",
                    c.id, c.data_used, c.flushed
                ));
            }
            common::image_check(&f, &c)?;
            delivered += 1;
            if let (Origin::Allocator, Some(a)) = (c.origin, allocator) {
                d.free(a, c.data_address)?;
            }
            completed.push(c);
            queued.extend(common::queue_from(d, pin, size, allocator)?);
        }
    }
    if delivered < FRAMES {
        return Err(format!(
            "only {delivered} of {FRAMES} frames delivered in {} intervals: Process was not restarted",
            4 * FRAMES
        ));
    }
    // Stop with frames in flight: half an interval into the next frame.
    d.advance(f.frame_interval / 2)?;
    d.set_state(pin, state::STOP)?;
    for c in d.take_completed(pin) {
        if c.data_used != 0 {
            if c.data_used != size {
                return Err(format!("frame {} completed with a partial image", c.id));
            }
            common::image_check(&f, &c)?;
        }
        if let (Origin::Allocator, Some(a)) = (c.origin, allocator) {
            d.free(a, c.data_address)?;
        }
        completed.push(c);
    }
    let ids: Vec<u64> = completed.iter().map(|c| c.id).collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    if unique.len() != ids.len() {
        return Err(format!("a frame completed twice: {ids:?}"));
    }
    let queued: BTreeSet<u64> = queued.into_iter().collect();
    if unique != queued {
        return Err(format!(
            "frames lost: queued {queued:?}, completed {unique:?}"
        ));
    }
    let run = Run {
        boundaries: d.uc.get_data().boundaries,
        interleaved: d.uc.get_data().interleaved.clone(),
    };
    let violations = d.unload()?;
    if !violations.is_empty() {
        return Err(format!("at unload:\n{}", violations.join("\n")));
    }
    Ok(run)
}

/// The clean run, then one run per boundary it passed. Returns (runs,
/// runs in which a DPC actually interleaved).
fn every_boundary(config: Config, path: Path) -> (u64, u64) {
    let clean = scenario(config, path).unwrap_or_else(|e| panic!("{config:?} {path:?}: {e}"));
    assert!(clean.interleaved.is_none());
    let mut interleaved = 0;
    for k in 0..clean.boundaries {
        let at = Config {
            interleave_at: Some(k),
            ..config
        };
        let run = scenario(at, path)
            .unwrap_or_else(|e| panic!("{config:?} {path:?}, a DPC at boundary {k}: {e}"));
        if run.interleaved.is_some() {
            interleaved += 1;
        }
    }
    (clean.boundaries, interleaved)
}

#[test]
fn a_dpc_at_every_passive_boundary_user_path() {
    let (runs, interleaved) = every_boundary(Config::default(), Path::User);
    println!("user path: {runs} boundaries, a DPC interleaved at {interleaved}");
    assert!(interleaved > 20, "{interleaved} of {runs}");
}

#[test]
fn a_dpc_at_every_passive_boundary_kernel_path() {
    let (runs, interleaved) = every_boundary(
        Config {
            dma_adapter: false,
            ..Config::default()
        },
        Path::Kernel,
    );
    println!("kernel path: {runs} boundaries, a DPC interleaved at {interleaved}");
    assert!(interleaved > 20, "{interleaved} of {runs}");
}
