//! The harness itself: unicorn now and then ends an emulation early (no
//! failure recorded, well inside the time limit, at an import's stub), and
//! the model resumes the call where it stopped. Here such stops are
//! provoked at every import the driver calls, once before its hook runs
//! and once after ([`Config::early_stops`]), on both allocator paths and
//! through a stop with frames in flight: the run must make exactly the
//! calls a run without stops makes (a hook run twice would allocate or
//! free twice), deliver the same frames, and unload clean.

mod common;

use avscap::portable::video_format::PixelFormat;
use avscap_kernel_emu::ks::state;
use avscap_kernel_emu::Config;
use common::{check_frames, format, Path, Stream};

/// What a run did, as far as a hook run twice would change it.
#[derive(Debug, PartialEq, Eq)]
struct Trace {
    /// Every failable call (allocations, clones, work items, …) with its
    /// call site, in order.
    calls: Vec<(&'static str, String)>,
    /// Every `memcpy` length, in order.
    copies: Vec<u64>,
    /// DPC runs.
    dpc_runs: u64,
    /// The delivered frames: picture time and bytes.
    frames: Vec<(i64, Vec<u8>)>,
}

/// Streams 6 frames, stops half an interval into the next with frames in
/// flight, streams 4 more, unloads; returns the trace and the early stops
/// provoked.
fn run(early_stops: bool, path: Path) -> (Trace, u64) {
    let config = Config {
        early_stops,
        ..Config::default()
    };
    let f = format(PixelFormat::Yuy2, 320, 240);
    let mut s = Stream::open(config, f, path);
    s.set_state(state::RUN);
    let mut frames = s.stream(6, 3);
    check_frames(&f, &frames, 1, None);
    s.advance(f.frame_interval / 2);
    s.set_state(state::STOP);
    for c in s.d.take_completed(s.pin) {
        s.recycle(&c);
    }
    s.set_state(state::RUN);
    let again = s.stream(4, 3);
    check_frames(&f, &again, 1, None);
    frames.extend(again);
    let k = s.d.uc.get_data();
    let trace = Trace {
        calls: k
            .fault_points
            .iter()
            .map(|p| (p.call, p.site.clone()))
            .collect(),
        copies: k.nt.memcpy.clone(),
        dpc_runs: k.nt.dpcs.values().map(|d| d.runs).sum(),
        frames: frames
            .iter()
            .map(|c| (c.presentation_time, c.data.clone()))
            .collect(),
    };
    let stops = k.early_stops;
    let leaks = s.teardown();
    assert!(
        leaks.is_empty(),
        "{path:?}, early stops {early_stops}: {leaks:#?}"
    );
    (trace, stops)
}

fn same_run_with_early_stops(path: Path) {
    let (plain, none) = run(false, path);
    assert_eq!(none, 0, "stops provoked without the option");
    let (stopped, stops) = run(true, path);
    // Two per import call at least (before and after its hook), and the
    // path makes hundreds of them.
    assert!(stops > 200, "{path:?}: only {stops} early stops provoked");
    assert_eq!(
        stopped.calls.len(),
        plain.calls.len(),
        "{path:?}: failable calls"
    );
    assert_eq!(stopped, plain, "{path:?}: the run with early stops differs");
    println!(
        "{path:?} path: {stops} early stops, {} failable calls, {} frames, the same run",
        plain.calls.len(),
        plain.frames.len()
    );
}

#[test]
fn early_stops_on_the_user_path_change_nothing() {
    same_run_with_early_stops(Path::User);
}

#[test]
fn early_stops_on_the_kernel_path_change_nothing() {
    same_run_with_early_stops(Path::Kernel);
}
