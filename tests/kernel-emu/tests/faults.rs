//! Fault injection: every failable call the driver makes (pool, DMA
//! adapter, common buffer, contiguous memory, `_KsEdit`, object bag, filter
//! factory, stream-pointer clone, work item, clock, `KsInitializeDriver`) on
//! the way from `DriverEntry` through Add, Start, filter and pin creation, a
//! format change, `InitializeAllocator`, STOP→ACQUIRE→PAUSE→RUN and
//! streaming, is made to fail once — the n-th call, for every n the path
//! makes. In each run the driver must fail the routine it was in with an
//! error status (or, while streaming, complete or keep every frame
//! correctly), never bug-check or break a rule, and leave nothing behind
//! at unload.

mod common;

use avscap::portable::video_format::{PixelFormat, VideoFormat};
use avscap_kernel_emu::ks::{self, state, Completed, Origin};
use avscap_kernel_emu::machine::{FaultPoint, R};
use avscap_kernel_emu::session::{read_sys, Allocator, LegacyFraming};
use avscap_kernel_emu::{nt, Config, Driver};
use common::{format, Path};

/// Frames each run streams (when it gets that far).
const FRAMES: usize = 4;
/// Frames kept queued while streaming.
const DEPTH: usize = 3;

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A routine failed with this status (named by the step).
    Failed(&'static str, u32),
    /// The run streamed to the end.
    Streamed,
}

struct Run {
    end: End,
    points: Vec<FaultPoint>,
    delivered: usize,
}

fn is_error(status: u32) -> bool {
    status >= 0xC000_0000
}

/// Checks a failure status and unloads: the routine that failed must have
/// returned an NTSTATUS error, and nothing may be left behind.
fn failed(step: &'static str, status: u32) -> R<End> {
    if !is_error(status) {
        return Err(format!("{step} returned {status:#x}, not an error status"));
    }
    Ok(End::Failed(step, status))
}

/// A delivered frame is the host core's image for its picture and drop
/// count; a frame completed empty carries no data.
fn check_completed(format: &VideoFormat, c: &Completed) -> R<bool> {
    if c.data_used == 0 {
        return Ok(false);
    }
    let size = format.layout().unwrap().image_size();
    if c.data_used != size {
        return Err(format!(
            "frame {} completed with DataUsed {} of {size}",
            c.id, c.data_used
        ));
    }
    common::image_check(format, c)?;
    Ok(true)
}

/// Streams until `count` frames completed (queue kept `DEPTH` deep, from
/// the allocator on the kernel path, allocator frames given back); returns how many were delivered full.
fn stream(
    d: &mut Driver,
    f: &VideoFormat,
    pin: u64,
    allocator: Option<Allocator>,
    size: u32,
    count: usize,
) -> R<usize> {
    while common::queued(d, pin) < DEPTH {
        if common::queue_from(d, pin, size, allocator)?.is_none() {
            break;
        }
    }
    let (mut completed, mut delivered) = (0, 0);
    for _ in 0..3 * count {
        if completed >= count {
            break;
        }
        d.advance(f.frame_interval)?;
        for c in d.take_completed(pin) {
            completed += 1;
            if check_completed(f, &c)? {
                delivered += 1;
            }
            if let (Origin::Allocator, Some(a)) = (c.origin, allocator) {
                d.free(a, c.data_address)?;
            }
            common::queue_from(d, pin, size, allocator)?;
        }
    }
    if completed < count {
        return Err(format!(
            "only {completed} of {count} frames completed in {} intervals",
            3 * count
        ));
    }
    Ok(delivered)
}

/// The whole path once, with `config` (its `fail_call` picks the fault),
/// then the unload and its rules.
///
/// On an error the driver is left as it is (its end-of-test unload is
/// skipped), so the error that stopped the scenario is the one reported,
/// with the driver's `DbgPrint` output, instead of whatever the unload of a
/// half-built or half-stopped driver then runs into.
fn scenario(sys: &[u8], config: Config, path: Path) -> R<Run> {
    let (mut d, status) = Driver::load_status(config, sys, &nt::exports(), &ks::exports())?;
    let walked = walk(&mut d, status, path);
    let (end, delivered) = match walked {
        Ok(walked) => walked,
        Err(e) => {
            d.disarm();
            return Err(format!("{e}\n--- DbgPrint ---\n{}", d.log()));
        }
    };
    let points = d.uc.get_data().fault_points.clone();
    let violations = d.unload()?;
    if !violations.is_empty() {
        return Err(format!("at unload:\n{}", violations.join("\n")));
    }
    Ok(Run {
        end,
        points,
        delivered,
    })
}

/// The path from `DriverEntry` (which returned `status`) to the end of the
/// second stream, or to the first routine that failed: how it ended and
/// how many frames were delivered full.
#[allow(clippy::too_many_lines)]
fn walk(d: &mut Driver, status: u32, path: Path) -> R<(End, usize)> {
    let f = format(PixelFormat::Yuy2, 320, 240);
    let other = format(PixelFormat::Rgb24, 320, 240);
    let mut delivered = 0;
    let end = 'run: {
        if status != 0 {
            break 'run failed("DriverEntry", status)?;
        }
        let status = d.try_add_device()?;
        if status != 0 {
            break 'run failed("Add", status)?;
        }
        let status = d.start_device()?;
        if status != 0 {
            break 'run failed("Start", status)?;
        }
        let filter = match d.try_create_filter()? {
            Ok(filter) => filter,
            Err(status) => break 'run failed("filter Create", status)?,
        };
        let pin = match d.connect(filter, &other)? {
            Ok(pin) => pin,
            Err(status) => break 'run failed("pin Create", status)?,
        };
        let status = d.change_format(pin, &f)?;
        if status != 0 {
            break 'run failed("SetDataFormat", status)?;
        }
        let allocator = if path == Path::Kernel {
            let ex = d.allocator_framing_ex(pin)?;
            match d.create_allocator(pin, &LegacyFraming::from_ex(&ex))? {
                Ok(a) => Some(a),
                Err(status) => break 'run failed("InitializeAllocator", status)?,
            }
        } else {
            None
        };
        for (to, step) in [
            (state::ACQUIRE, "STOP->ACQUIRE"),
            (state::PAUSE, "ACQUIRE->PAUSE"),
            (state::RUN, "PAUSE->RUN"),
        ] {
            let status = d.step_state(pin, to)?;
            if status != 0 {
                break 'run failed(step, status)?;
            }
        }
        let size = f.layout().unwrap().image_size();
        delivered += stream(d, &f, pin, allocator, size, FRAMES)?;
        // Stop, then a second stream on the same pin: the resources of
        // ACQUIRE are taken again, and can fail again.
        for to in [state::PAUSE, state::ACQUIRE, state::STOP] {
            let status = d.step_state(pin, to)?;
            if status != 0 {
                return Err(format!("the step down to state {to} returned {status:#x}"));
            }
        }
        // What the pause handed back empty and the stop flushed goes back
        // to where it came from.
        for c in d.take_completed(pin) {
            if let (Origin::Allocator, Some(a)) = (c.origin, allocator) {
                d.free(a, c.data_address)?;
            }
        }
        for (to, step) in [
            (state::ACQUIRE, "second STOP->ACQUIRE"),
            (state::PAUSE, "second ACQUIRE->PAUSE"),
            (state::RUN, "second PAUSE->RUN"),
        ] {
            let status = d.step_state(pin, to)?;
            if status != 0 {
                break 'run failed(step, status)?;
            }
        }
        delivered += stream(d, &f, pin, allocator, size, FRAMES)?;
        End::Streamed
    };
    Ok((end, delivered))
}

/// Runs the path once without a fault, then once per failable call it
/// made with exactly that call failing. Returns the number of failure
/// points exercised.
fn every_fault(config: Config, path: Path) -> usize {
    let sys = read_sys().unwrap();
    let clean = scenario(&sys, config, path)
        .unwrap_or_else(|e| panic!("{config:?} {path:?} without a fault: {e}"));
    assert_eq!(clean.end, End::Streamed, "{config:?} {path:?}");
    assert_eq!(
        clean.delivered,
        2 * FRAMES,
        "{config:?} {path:?}: every frame delivered"
    );
    let total = clean.points.len();
    assert!(total > 0, "no failable call at all?");
    for n in 0..total {
        let faulty = Config {
            fail_call: Some(n as u64),
            ..config
        };
        let point = &clean.points[n];
        let what = format!(
            "{config:?} {path:?}: failing call {n} ({} at {})",
            point.call, point.site
        );
        let run = scenario(&sys, faulty, path).unwrap_or_else(|e| panic!("{what}: {e}"));
        // The run made the same calls up to the failing one.
        let failed_point = run
            .points
            .get(n)
            .unwrap_or_else(|| panic!("{what}: the run made fewer calls"));
        assert!(failed_point.failed, "{what}: not the call that failed");
        assert_eq!(
            failed_point.call, point.call,
            "{what}: a different call at {n}"
        );
        if run.end == End::Streamed {
            // A fault absorbed while streaming (a clone or an allocation
            // the driver can do without) loses no frame beyond the one it
            // affected.
            assert!(
                run.delivered + 1 >= 2 * FRAMES,
                "{what}: only {} of {} frames delivered",
                run.delivered,
                2 * FRAMES
            );
        }
    }
    total
}

/// Every configuration's failure points on `path`: the count, and a
/// summary by call.
fn all_configs(path: Path) -> usize {
    let mut by_call = std::collections::BTreeMap::<&str, usize>::new();
    let mut total = 0;
    for config in common::configs() {
        let sys = read_sys().unwrap();
        let points = scenario(&sys, config, path).unwrap().points;
        for p in &points {
            *by_call.entry(p.call).or_default() += 1;
        }
        total += every_fault(config, path);
    }
    println!("{path:?} path, 4 configurations: {total} failure points exercised: {by_call:?}");
    total
}

#[test]
fn every_failure_point_on_the_user_path() {
    let total = all_configs(Path::User);
    assert!(total >= 40, "{total}");
}

#[test]
fn every_failure_point_on_the_kernel_path() {
    let total = all_configs(Path::Kernel);
    assert!(total >= 40, "{total}");
}
