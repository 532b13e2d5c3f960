//! Host simulator for avscap (not part of the driver).
//!
//! Runs the driver's portable core the way the kernel shell does, in virtual
//! time, and writes what the camera would show:
//! * memory is taken per stream, as the driver takes it: the staging slots
//!   at "STOP → ACQUIRE" (sized for the format), and, when the client's
//!   frames come from the pin's allocator, that allocator's own buffer
//!   sized from the framing it is created with (heap buffers stand in for
//!   common buffers);
//! * a client queue of frames stands in for ks.sys: `own` frames come from
//!   our allocator (a kernel-to-kernel connection, written in place),
//!   `foreign` frames are client buffers (a user-mode connection such as
//!   GraphEdit's renderer or the Camera app, filled by copying), `mixed`
//!   alternates; `--client-pitch` gives foreign frames a wider surface pitch;
//! * "Process" routes each client frame to a DMA target and queues it; each
//!   "timer DPC" only ticks the capture engine (bookkeeping); the "delivery
//!   work item" then synthesizes each due frame into its target, copies
//!   staging slots out row by row at the client's pitch, and hands the
//!   frame to the client, which writes it to a YUV4MPEG2 file (4:2:0,
//!   packed formats converted).
//!
//! `cargo run --example simulate -- --help` lists the flags.
//!
//! Every flag is checked, and every buffer and the output sized, before
//! anything is taken or created ([`validate`]): a refused run exits with
//! status 2, one line on stderr naming the flag and its limit, and no file.
//! The limits keep any accepted run's buffers within [`MEMORY_BUDGET`]. A
//! run that fails once started exits with 1 and removes what it wrote; one
//! that will write more than [`LARGE_OUTPUT`] says so before it starts.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::LazyLock;

use avscap::portable::capture_engine::{
    route_frame, CaptureEngine, ClientBuffer, DmaTarget, RouteError, Target, Tick,
};
use avscap::portable::frame_pool::{FramePool, MAX_POOL_FRAMES};
use avscap::portable::framing::{self, AllocatorFraming, BufferPlan, PinFraming, PAGE_SIZE};
use avscap::portable::image;
use avscap::portable::stream_memory::STAGING_SLOTS;
use avscap::portable::video_format::{
    FrameLayout, PixelFormat, VideoFormat, DATA_RANGES, FRAME_SIZES,
};
use clap::builder::{EnumValueParser, PossibleValue};
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command, ValueEnum};

mod heap_buffer;
mod planes;

use heap_buffer::HeapBuffer;
use planes::Planes;

/// Most client frames circulating: as many as one allocator hands out
/// (`MAX_POOL_FRAMES`), so an own-path client never has more; each foreign
/// one is a buffer of a whole frame.
const MAX_CLIENT_FRAMES: u32 = MAX_POOL_FRAMES;

/// Longest a client keeps a frame, in frame intervals (33 s at 30 fps). A
/// client that keeps one longer is stuck rather than slow, and with it a run
/// lasts at most `--frames × (MAX_HOLD + 1)` intervals (a client with one
/// frame gets it back after `--hold`).
const MAX_HOLD: u64 = 1000;

/// Widest client surface pitch, in bytes: over five times the widest row
/// the pin produces (3840 RGB24 pixels, 11 520 bytes); a wider one only
/// makes each foreign frame larger.
const MAX_CLIENT_PITCH: u32 = 65_536;

/// Most bytes the buffers of one run may take: staging slots, the
/// allocator's buffer, foreign client frames, the y4m planes and the PNG's
/// pixels, all sized before any is taken.
const MEMORY_BUDGET: u64 = 2 << 30;

/// A run that will write more than this says so before it starts.
const LARGE_OUTPUT: u64 = 4 << 30;

/// Depth of the simulated hardware's target queue (the driver's).
const ENGINE_DEPTH: usize = 8;

/// Frame intervals in a row without a delivered frame after which a run
/// stops. A client gives every frame back within `--hold` intervals, so no
/// accepted flags reach this; it reports what happened if one ever does.
const STALL_INTERVALS: u64 = MAX_HOLD + ENGINE_DEPTH as u64 + 1;

/// Exit code of a run refused before it started (bad flags, an output that
/// cannot be created): nothing was written.
const EXIT_REFUSED: u8 = 2;

/// Exit code of a run that failed once started; its outputs are removed.
const EXIT_FAILED: u8 = 1;

/// `--format`: the pixel format of the pin connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FormatArg {
    Yuy2,
    Rgb24,
    Nv12,
}

impl FormatArg {
    const fn pixel(self) -> PixelFormat {
        match self {
            Self::Yuy2 => PixelFormat::Yuy2,
            Self::Rgb24 => PixelFormat::Rgb24,
            Self::Nv12 => PixelFormat::Nv12,
        }
    }

    /// The flag's value naming this format.
    const fn name(self) -> &'static str {
        match self {
            Self::Yuy2 => "yuy2",
            Self::Rgb24 => "rgb24",
            Self::Nv12 => "nv12",
        }
    }
}

impl ValueEnum for FormatArg {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Yuy2, Self::Rgb24, Self::Nv12]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

/// `--path`: where client frames come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathArg {
    /// Every client frame comes from our allocator: zero-copy.
    Own,
    /// No client frame is ours: every frame is copied from a staging slot.
    Foreign,
    /// Alternate own and foreign frames.
    Mixed,
}

impl PathArg {
    const fn name(self) -> &'static str {
        match self {
            Self::Own => "own",
            Self::Foreign => "foreign",
            Self::Mixed => "mixed",
        }
    }

    /// The line `--help` shows for this value.
    const fn help(self) -> &'static str {
        match self {
            Self::Own => "Every client frame comes from our allocator: zero-copy",
            Self::Foreign => "No client frame is ours: every frame is copied from a staging slot",
            Self::Mixed => "Alternate own and foreign frames",
        }
    }
}

impl ValueEnum for PathArg {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Own, Self::Foreign, Self::Mixed]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.help()))
    }
}

/// The flags of one run, as parsed (each one is checked by [`validate`]).
#[derive(Debug)]
struct Args {
    format: FormatArg,
    size: (u32, u32),
    fps: u32,
    frames: u32,
    path: PathArg,
    out: PathBuf,
    png: Option<PathBuf>,
    allocator_frames: u32,
    staging_slots: u32,
    client_pitch: u32,
    client_frames: u32,
    hold: u64,
}

/// `--staging-slots`'s default, the driver's count, as clap wants it.
static STAGING_SLOTS_DEFAULT: LazyLock<String> = LazyLock::new(|| STAGING_SLOTS.to_string());

/// The command line: clap's builder rather than its derive macros, whose
/// expansions carry an `allow(clippy::restriction)` that the crate's
/// forbidden unsafe-code lints refuse. Each flag's id is its long name.
fn command() -> Command {
    /// A `--long VALUE` flag.
    fn flag(long: &'static str, value_name: &'static str, help: &'static str) -> Arg {
        Arg::new(long)
            .long(long)
            .value_name(value_name)
            .action(ArgAction::Set)
            .help(help)
    }

    /// A `--long N` flag of a `u32`.
    fn number(long: &'static str, value_name: &'static str, help: &'static str) -> Arg {
        flag(long, value_name, help).value_parser(value_parser!(u32))
    }

    Command::new("simulate")
        .about(env!("CARGO_PKG_DESCRIPTION"))
        .long_about(
            "Simulate avscap's capture pipeline on the host and write the video.\n\n\
             Every flag is checked before any buffer is taken or any file created; \
             a refused run exits with status 2 and one line naming the flag.",
        )
        .arg(
            flag("format", "FORMAT", "Pixel format of the pin connection")
                .value_parser(EnumValueParser::<FormatArg>::new())
                .default_value(FormatArg::Nv12.name()),
        )
        .arg(
            flag(
                "size",
                "SIZE",
                "Frame size, `WIDTHxHEIGHT` (one of the sizes the pin offers)",
            )
            .value_parser(parse_size)
            .default_value("640x480"),
        )
        .arg(number("fps", "FPS", "Frames per second: 15, 30 or 60").default_value("30"))
        .arg(
            number(
                "frames",
                "FRAMES",
                "Frames to deliver, at least 1 (the output has exactly this many)",
            )
            .default_value("60"),
        )
        .arg(
            flag("path", "PATH", "Where client frames come from")
                .value_parser(EnumValueParser::<PathArg>::new())
                .default_value(PathArg::Mixed.name()),
        )
        .arg(
            flag("out", "OUT", "Output YUV4MPEG2 file")
                .value_parser(value_parser!(PathBuf))
                .default_value("avscap.y4m"),
        )
        .arg(
            flag("png", "PNG", "Also write the last frame as a PNG")
                .value_parser(value_parser!(PathBuf)),
        )
        .arg(
            number(
                "allocator-frames",
                "ALLOCATOR_FRAMES",
                "Frames the pin's allocator framing asks for: 1 to 64",
            )
            .default_value("4"),
        )
        .arg(
            number(
                "staging-slots",
                "STAGING_SLOTS",
                "Staging slots for copied frames (the driver takes 2): 1 to 64",
            )
            .default_value(STAGING_SLOTS_DEFAULT.as_str()),
        )
        .arg(
            number(
                "client-pitch",
                "CLIENT_PITCH",
                "Surface pitch of foreign client frames in bytes (`KS_FRAME_INFO`'s \
                 `lSurfacePitch`); 0 for packed rows. A pitch wider than the format's \
                 stride makes the copy go row by row. At most 65536",
            )
            .default_value("0"),
        )
        .arg(
            number(
                "client-frames",
                "CLIENT_FRAMES",
                "Client frames circulating (the depth of the KS queue): 1 to 64, and \
                 no more own frames than --allocator-frames",
            )
            .default_value("4"),
        )
        .arg(
            flag(
                "hold",
                "HOLD",
                "Frame intervals the client keeps each delivered frame before \
                 returning it (at most 1000); a slow client starves the pin and \
                 frames drop",
            )
            .value_parser(value_parser!(u64))
            .default_value("0"),
        )
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or("expected WIDTHxHEIGHT")?;
    Ok((
        w.parse().map_err(|e| format!("width: {e}"))?,
        h.parse().map_err(|e| format!("height: {e}"))?,
    ))
}

/// Parses a command line (program name first).
///
/// # Errors
/// clap's error: a bad value or flag, or a request for `--help`.
fn parse_args<I, T>(command_line: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let m = command().try_get_matches_from(command_line)?;
    Ok(Args {
        format: given(&m, "format"),
        size: given(&m, "size"),
        fps: given(&m, "fps"),
        frames: given(&m, "frames"),
        path: given(&m, "path"),
        out: given(&m, "out"),
        png: m.get_one::<PathBuf>("png").cloned(),
        allocator_frames: given(&m, "allocator-frames"),
        staging_slots: given(&m, "staging-slots"),
        client_pitch: given(&m, "client-pitch"),
        client_frames: given(&m, "client-frames"),
        hold: given(&m, "hold"),
    })
}

/// The value of flag `id`, which has a default.
///
/// # Panics
/// If `id` is not a flag of [`command`] with a default and a value parser
/// of `T`: a mistake in this file, which every test that parses flags finds.
fn given<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> T {
    m.get_one::<T>(id)
        .cloned()
        .unwrap_or_else(|| panic!("--{id} has a default"))
}

/// The first line of one of clap's errors, without its `error: ` prefix
/// (the rest is usage and a pointer to `--help`).
fn clap_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// A run the flags describe, every size checked: what [`run`] allocates
/// and writes is all here.
#[derive(Debug)]
struct Plan {
    fps: u32,
    layout: FrameLayout,
    /// Frame interval in 100 ns.
    interval: i64,
    frames: u32,
    path: PathArg,
    staging: BufferPlan,
    /// The pin allocator's buffer, when client frames come from it.
    allocator: Option<BufferPlan>,
    client_frames: u32,
    /// Bytes of each foreign client frame.
    foreign_extent: usize,
    client_pitch: i32,
    hold: u64,
    out: PathBuf,
    png: Option<PathBuf>,
    /// Bytes of the y4m header.
    header_bytes: u64,
    /// Bytes of each y4m frame, its `FRAME` line included.
    frame_bytes: u64,
}

/// Checks every flag and sizes every buffer and the output, taking
/// nothing.
///
/// # Errors
/// One line naming the flag refused and its limit.
#[allow(clippy::too_many_lines)]
fn validate(args: &Args) -> Result<Plan, String> {
    if args.frames == 0 {
        return Err("--frames 0: at least 1 frame".into());
    }
    let format = find_format(args)?;
    let (width, height) = args.size;
    let layout = format
        .layout()
        .map_err(|e| format!("--size {width}x{height}: {e}"))?;
    let staging = framing::staging_plan(&layout, args.staging_slots)
        .map_err(|e| format!("--staging-slots {}: {e}", args.staging_slots))?;
    let pin_framing = PinFraming::for_format(&format, args.allocator_frames)
        .map_err(|e| format!("--allocator-frames {}: {e}", args.allocator_frames))?;
    let allocator = framing::allocator_plan(
        &AllocatorFraming::from_pin(&pin_framing),
        layout.image_size(),
    )
    .map_err(|e| {
        format!(
            "--allocator-frames {}: the allocator refused its framing: {e} (NTSTATUS {:#x})",
            args.allocator_frames,
            e.ntstatus()
        )
    })?;

    let clients = args.client_frames;
    if clients == 0 {
        return Err("--client-frames 0: the client needs at least 1 frame".into());
    }
    if clients > MAX_CLIENT_FRAMES {
        return Err(format!(
            "--client-frames {clients}: at most {MAX_CLIENT_FRAMES}"
        ));
    }
    let own_frames = match args.path {
        PathArg::Own => clients,
        PathArg::Foreign => 0,
        PathArg::Mixed => clients.div_ceil(2),
    };
    if own_frames > allocator.frames() {
        return Err(format!(
            "--client-frames {clients} with --path {} takes {own_frames} allocator frames; \
             --allocator-frames is {}",
            args.path.name(),
            allocator.frames()
        ));
    }
    let foreign_frames = clients - own_frames;

    if args.hold > MAX_HOLD {
        return Err(format!(
            "--hold {}: at most {MAX_HOLD} frame intervals",
            args.hold
        ));
    }

    if args.client_pitch > MAX_CLIENT_PITCH {
        return Err(format!(
            "--client-pitch {}: at most {MAX_CLIENT_PITCH} bytes",
            args.client_pitch
        ));
    }
    if args.client_pitch != 0 && args.client_pitch < layout.stride() {
        return Err(format!(
            "--client-pitch {}: below the format's stride of {} bytes",
            args.client_pitch,
            layout.stride()
        ));
    }
    let client_pitch = i32::try_from(args.client_pitch)
        .map_err(|_| format!("--client-pitch {}: too large", args.client_pitch))?;
    // A foreign frame holds the image's rows at the client's pitch.
    let image = u64::from(layout.image_size());
    let foreign_extent = if args.client_pitch == 0 {
        image
    } else {
        image / u64::from(layout.stride().max(1)) * u64::from(args.client_pitch)
    };

    if args
        .png
        .as_ref()
        .is_some_and(|png| same_file(png, &args.out))
    {
        return Err(format!(
            "--png {}: the same file as --out",
            args.out.display()
        ));
    }
    if args.out.is_dir() {
        return Err(format!("--out {}: is a directory", args.out.display()));
    }

    // Every buffer the run takes, before any is taken.
    let overflow = || String::from("the buffer sizes overflow");
    let pixels = u64::from(layout.width()) * u64::from(layout.height());
    let buffer = |plan: &BufferPlan| plan.bytes() as u64 + u64::from(PAGE_SIZE);
    let staging_bytes = buffer(&staging);
    let allocator = (args.path != PathArg::Foreign).then_some(allocator);
    let allocator_bytes = allocator.as_ref().map_or(0, buffer);
    let client_bytes = u64::from(foreign_frames)
        .checked_mul(foreign_extent)
        .ok_or_else(overflow)?;
    let planes_bytes = pixels + 2 * (pixels / 4);
    // The PNG: its RGB pixels, and the encoder's compressed stream plus,
    // when compression does not pay, a stored one (a filter byte a row).
    let png_bytes = if args.png.is_some() {
        3 * (3 * pixels + u64::from(layout.height()))
    } else {
        0
    };
    let memory = [allocator_bytes, client_bytes, planes_bytes, png_bytes]
        .into_iter()
        .try_fold(staging_bytes, u64::checked_add)
        .ok_or_else(overflow)?;
    if memory > MEMORY_BUDGET {
        let mut flags = vec![
            format!("--format {}", layout.pixel().name()),
            format!("--size {width}x{height}"),
        ];
        if allocator.is_some() {
            flags.push(format!("--allocator-frames {}", args.allocator_frames));
        }
        flags.push(format!("--staging-slots {}", args.staging_slots));
        if foreign_frames > 0 {
            flags.push(format!("--client-frames {clients}"));
            if args.client_pitch != 0 {
                flags.push(format!("--client-pitch {}", args.client_pitch));
            }
        }
        let flags = flags.join(" ");
        return Err(format!(
            "{flags}: the run's buffers would take {memory} bytes (allocator {}, staging {}, \
             client frames {}, planes and PNG {}); at most {MEMORY_BUDGET} ({} GiB)",
            human_bytes(allocator_bytes),
            human_bytes(staging_bytes),
            human_bytes(client_bytes),
            human_bytes(planes_bytes + png_bytes),
            MEMORY_BUDGET >> 30
        ));
    }

    let header_bytes =
        u64::try_from(y4m_header(&layout, args.fps)?.len()).map_err(|_| overflow())?;
    let frame_bytes = FRAME_LINE + planes_bytes;
    Ok(Plan {
        fps: args.fps,
        layout,
        interval: format.frame_interval,
        frames: args.frames,
        path: args.path,
        staging,
        allocator,
        client_frames: clients,
        foreign_extent: usize::try_from(foreign_extent).map_err(|_| overflow())?,
        client_pitch,
        hold: args.hold,
        out: args.out.clone(),
        png: args.png.clone(),
        header_bytes,
        frame_bytes,
    })
}

/// Bytes of the line that starts each y4m frame (`FRAME\n`).
const FRAME_LINE: u64 = 6;

/// The y4m stream header the run writes.
fn y4m_header(layout: &FrameLayout, fps: u32) -> Result<Vec<u8>, String> {
    let mut header = Vec::new();
    y4m_encoder(layout, fps)
        .write_header(&mut header)
        .map_err(|e| format!("y4m: {e:?}"))?;
    Ok(header)
}

fn y4m_encoder(layout: &FrameLayout, fps: u32) -> y4m::EncoderBuilder {
    y4m::encode(
        layout.width() as usize,
        layout.height() as usize,
        y4m::Ratio::new(fps as usize, 1),
    )
    .with_colorspace(y4m::Colorspace::C420jpeg)
}

/// Whether two paths name one file (the same text, or both existing and
/// resolving to one).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(a), Ok(b)) if a == b
        )
}

impl Plan {
    /// Bytes of the whole y4m file.
    fn output_bytes(&self) -> u64 {
        self.header_bytes
            .saturating_add(u64::from(self.frames).saturating_mul(self.frame_bytes))
    }

    /// Bytes of the y4m file once `delivered` frames are in it.
    const fn written_after(&self, delivered: u64) -> u64 {
        self.header_bytes
            .saturating_add(delivered.saturating_mul(self.frame_bytes))
    }

    /// A warning for an output past [`LARGE_OUTPUT`] that lands on disk (an
    /// existing device or pipe, such as `/dev/null`, gets none).
    fn size_warning(&self) -> Option<String> {
        let bytes = self.output_bytes();
        let not_a_file = std::fs::metadata(&self.out).is_ok_and(|m| !m.is_file());
        (bytes > LARGE_OUTPUT && !not_a_file).then(|| {
            format!(
                "warning: --frames {} of {}x{} will write {} ({bytes} bytes) to {}",
                self.frames,
                self.layout.width(),
                self.layout.height(),
                human_bytes(bytes),
                self.out.display()
            )
        })
    }
}

/// `bytes` in the largest binary unit that keeps a whole part, one decimal.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    let mut scale = 1024u64;
    while unit + 1 < UNITS.len() && bytes / scale >= 1024 {
        unit += 1;
        scale *= 1024;
    }
    // Tenths of the unit, rounded; u128 so no product overflows.
    let tenths = (u128::from(bytes) * 10 + u128::from(scale) / 2) / u128::from(scale);
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

/// The pin's format for the flags, or which of them it does not offer.
fn find_format(args: &Args) -> Result<VideoFormat, String> {
    let pixel = args.format.pixel();
    let (width, height) = args.size;
    if let Some(format) = DATA_RANGES
        .iter()
        .find(|f| f.pixel == pixel && (f.width, f.height) == args.size && f.fps() == args.fps)
    {
        return Ok(*format);
    }
    if !FRAME_SIZES.contains(&args.size) {
        let sizes: Vec<String> = FRAME_SIZES
            .iter()
            .map(|(w, h)| format!("{w}x{h}"))
            .collect();
        return Err(format!(
            "--size {width}x{height}: the pin offers {}",
            sizes.join(", ")
        ));
    }
    let mut rates: Vec<u32> = DATA_RANGES.iter().map(VideoFormat::fps).collect();
    rates.sort_unstable();
    rates.dedup();
    if !rates.contains(&args.fps) {
        let rates: Vec<String> = rates.iter().map(u32::to_string).collect();
        let (last, first) = rates
            .split_last()
            .map_or((String::new(), &[][..]), |(l, f)| (l.clone(), f));
        return Err(format!(
            "--fps {}: the pin offers {} or {last}",
            args.fps,
            first.join(", ")
        ));
    }
    Err(format!(
        "--format {} --size {width}x{height} --fps {}: the pin does not offer this combination",
        pixel.name(),
        args.fps
    ))
}

/// A client frame: one of ours (an address in the allocator's buffer) or a
/// client-owned buffer with its surface pitch.
enum ClientFrame {
    Own { address: usize, len: usize },
    Foreign { bytes: Vec<u8>, pitch: i32 },
}

impl ClientFrame {
    /// The frame's bytes: a slot of the allocator's buffer, or the client's
    /// own buffer.
    fn bytes<'a>(
        &'a mut self,
        allocator_buffer: &'a mut Option<HeapBuffer>,
    ) -> Result<&'a mut [u8], &'static str> {
        match self {
            Self::Own { address, len } => allocator_buffer
                .as_mut()
                .and_then(|b| b.at(*address, *len))
                .ok_or("own frame outside the allocator buffer"),
            Self::Foreign { bytes, .. } => Ok(bytes),
        }
    }
}

fn main() -> ExitCode {
    ExitCode::from(cli(std::env::args_os(), &mut std::io::stderr()))
}

/// The whole command: parses `command_line` (program name first), checks
/// it, runs, and returns the exit code; what the run says on stderr goes
/// to `log`, its statistics to stdout.
fn cli<I, T>(command_line: I, log: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match parse_args(command_line) {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help or --version.
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            let _ = writeln!(log, "simulate: {}", clap_line(&e));
            return EXIT_REFUSED;
        }
    };
    let plan = match validate(&args) {
        Ok(plan) => plan,
        Err(e) => {
            let _ = writeln!(log, "simulate: {e}");
            return EXIT_REFUSED;
        }
    };
    if let Some(warning) = plan.size_warning() {
        let _ = writeln!(log, "simulate: {warning}");
    }
    let outputs = match Outputs::create(&plan) {
        Ok(outputs) => outputs,
        Err(e) => {
            let _ = writeln!(log, "simulate: {e}");
            return EXIT_REFUSED;
        }
    };
    match run(&plan, outputs, log) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(log, "simulate: {e}");
            EXIT_FAILED
        }
    }
}

/// The files a run writes, created once the flags are checked. Dropped
/// without [`Outputs::keep`], it removes those it created as regular files
/// (a device such as `/dev/null` stays), so a failed run leaves no partial
/// output.
struct Outputs {
    y4m: Option<File>,
    png: Option<File>,
    /// Files to remove unless the run completes.
    created: Vec<PathBuf>,
}

impl Outputs {
    fn create(plan: &Plan) -> Result<Self, String> {
        let mut outputs = Self {
            y4m: None,
            png: None,
            created: Vec::new(),
        };
        outputs.y4m = Some(outputs.open("--out", &plan.out)?);
        if let Some(png) = &plan.png {
            outputs.png = Some(outputs.open("--png", png)?);
        }
        Ok(outputs)
    }

    fn open(&mut self, flag: &str, path: &Path) -> Result<File, String> {
        let file = File::create(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        if file.metadata().is_ok_and(|m| m.is_file()) {
            self.created.push(path.to_owned());
        }
        Ok(file)
    }

    /// The run completed: its files stay.
    fn keep(mut self) {
        self.created.clear();
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        self.y4m = None;
        self.png = None;
        for path in &self.created {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Runs the plan and writes its outputs.
#[allow(clippy::too_many_lines)]
fn run(plan: &Plan, mut outputs: Outputs, log: &mut dyn Write) -> Result<(), String> {
    let layout = &plan.layout;
    let image = layout.image_size() as usize;
    let no_memory = |what: &str, bytes: usize| format!("no memory for the {what} ({bytes} bytes)");

    // STOP -> ACQUIRE: the stream's staging slots, sized for its format.
    let mut staging_buffer = HeapBuffer::try_new(plan.staging.bytes())
        .ok_or_else(|| no_memory("staging slots", plan.staging.bytes()))?;
    let staging = FramePool::over(staging_buffer.region(), &plan.staging)
        .map_err(|e| format!("staging: {e}"))?;

    // InitializeAllocator, only when the graph uses the pin's allocator:
    // its own buffer, sized from the request the graph derives from our
    // framing.
    let (mut allocator_buffer, own) = match &plan.allocator {
        None => (None, None),
        Some(allocator) => {
            let buffer = HeapBuffer::try_new(allocator.bytes())
                .ok_or_else(|| no_memory("allocator buffer", allocator.bytes()))?;
            let pool = FramePool::over(buffer.region(), allocator)
                .map_err(|e| format!("allocator: {e}"))?;
            (Some(buffer), Some(pool))
        }
    };

    // The client's frames.
    let mut clients: Vec<ClientFrame> = Vec::new();
    for i in 0..plan.client_frames {
        let use_own = match plan.path {
            PathArg::Own => true,
            PathArg::Foreign => false,
            PathArg::Mixed => i % 2 == 0,
        };
        let frame = if let (Some(own), true) = (&own, use_own) {
            let f = own
                .allocate()
                .ok_or("the allocator ran out of frames for the client")?;
            ClientFrame::Own {
                address: f.virtual_address,
                len: f.len as usize,
            }
        } else {
            let mut bytes = Vec::new();
            bytes
                .try_reserve_exact(plan.foreign_extent)
                .map_err(|_| no_memory("client frames", plan.foreign_extent))?;
            bytes.resize(plan.foreign_extent, 0);
            ClientFrame::Foreign {
                bytes,
                pitch: plan.client_pitch,
            }
        };
        clients.push(frame);
    }
    let mut ready: VecDeque<usize> = (0..clients.len()).collect();
    let mut held: VecDeque<(u64, usize)> = VecDeque::new();

    let y4m_file = outputs.y4m.take().ok_or("no output file")?;
    let out_error = |e: &dyn std::fmt::Display| format!("--out {}: {e}", plan.out.display());
    let mut out = BufWriter::new(y4m_file);
    let mut y4m = y4m_encoder(layout, plan.fps)
        .write_header(&mut out)
        .map_err(|e| out_error(&format!("{e:?}")))?;

    let mut engine = CaptureEngine::<usize, ENGINE_DEPTH>::new(plan.interval, layout.image_size())
        .map_err(|e| format!("engine: {e}"))?;
    engine.run(0);
    let mut planes = Planes::new(layout);
    let mut tick_count = 0u64;
    let mut bytes_copied = 0u64;
    let mut pitched_copies = 0u64;
    let mut delivered = 0u64;
    // Intervals in a row that delivered nothing.
    let mut stalled = 0u64;
    let progress_every = u64::from(plan.frames / 10).max(1);
    while delivered < u64::from(plan.frames) {
        // The client returns frames it is done with.
        while let Some(&(until, id)) = held.front() {
            if until > tick_count {
                break;
            }
            held.pop_front();
            ready.push_back(id);
        }
        // Process: route queued client frames to DMA targets.
        while engine.has_room() {
            let Some(&id) = ready.front() else { break };
            let client = match clients.get(id).ok_or("no such client frame")? {
                ClientFrame::Own { address, len } => ClientBuffer {
                    address: *address,
                    extent: u32::try_from(*len).map_err(|_| "own frame too large")?,
                    surface_pitch: 0,
                },
                ClientFrame::Foreign { bytes, pitch } => ClientBuffer {
                    address: bytes.as_ptr() as usize,
                    extent: u32::try_from(bytes.len()).map_err(|_| "client frame too large")?,
                    surface_pitch: *pitch,
                },
            };
            match route_frame(own.as_ref(), &staging, client, layout.image_size()) {
                Ok(dma) => {
                    engine
                        .submit(Target {
                            cookie: id,
                            dma,
                            client,
                        })
                        .map_err(|_| "the engine's queue is full")?;
                    ready.pop_front();
                }
                Err(RouteError::NoStagingSlot) => break, // Process pends
                Err(e) => return Err(format!("routing a client frame: {e}")),
            }
        }
        // The timer DPC: bookkeeping only.
        let now = engine.next_due().ok_or("the engine stopped")?;
        tick_count += 1;
        if let Tick::Dropped { .. } | Tick::Idle = engine.tick(now) {
            stalled += 1;
            if stalled >= STALL_INTERVALS {
                return Err(starved(
                    plan,
                    stalled,
                    held.len(),
                    delivered,
                    engine.stats().dropped,
                ));
            }
            continue;
        }
        stalled = 0;
        // The delivery work item, at PASSIVE_LEVEL: all the pixel work.
        while let Some(c) = engine.take_due() {
            let target = *c.target.dma.frame();
            let overlay = c.overlay();
            let dma_buffer = match c.target.dma {
                DmaTarget::Direct(_) => allocator_buffer.as_mut().ok_or("no allocator")?,
                DmaTarget::Staging(_) => &mut staging_buffer,
            };
            let pixels = dma_buffer
                .at(target.virtual_address, image)
                .ok_or("DMA target outside its buffer")?;
            image::synthesize(pixels, layout, layout.stride(), &overlay)
                .map_err(|e| format!("synthesis: {e}"))?;
            let id = c.target.cookie;
            let client = clients.get_mut(id).ok_or("no such client frame")?;
            // Rows of the delivered frame are this far apart.
            let row_pitch = if let DmaTarget::Staging(_) = c.target.dma {
                let slot = staging_buffer
                    .get(target.virtual_address, image)
                    .ok_or("staging slot outside its buffer")?;
                let copy = c.target.copy_plan(layout).ok_or("no copy plan")?;
                let dest = client.bytes(&mut allocator_buffer)?;
                copy.copy(slot, dest).map_err(|e| format!("copy: {e}"))?;
                bytes_copied += copy.bytes_copied();
                pitched_copies += u64::from(!copy.is_packed());
                staging
                    .free(target.virtual_address)
                    .map_err(|e| format!("staging free: {e}"))?;
                if copy.is_packed() {
                    layout.stride()
                } else {
                    copy.dest_pitch
                }
            } else {
                layout.stride()
            };
            let frame = client.bytes(&mut allocator_buffer)?;
            planes.convert(layout, frame, row_pitch as usize);
            y4m.write_frame(&y4m::Frame::new([&planes.y, &planes.u, &planes.v], None))
                .map_err(|e| out_error(&format!("{e:?}")))?;
            let until = tick_count
                .checked_add(plan.hold)
                .ok_or("the tick count overflowed")?;
            held.push_back((until, id));
            delivered += 1;
            if plan.frames >= 100 && delivered.is_multiple_of(progress_every) {
                let _ = writeln!(
                    log,
                    "simulate: {delivered}/{} frames delivered, {} dropped, {} written",
                    plan.frames,
                    engine.stats().dropped,
                    human_bytes(plan.written_after(delivered))
                );
            }
        }
    }
    out.flush().map_err(|e| out_error(&e))?;
    drop(out);

    if let (Some(path), Some(file)) = (&plan.png, outputs.png.take()) {
        write_png(file, layout, &planes).map_err(|e| format!("--png {}: {e}", path.display()))?;
    }

    // ACQUIRE -> STOP: every in-flight target comes back and the staging
    // slots go; then the client closes the allocator, which must find every
    // frame home (DeleteAllocator frees its buffer).
    engine.stop();
    while let Some(t) = engine.take_queued() {
        if let DmaTarget::Staging(f) = t.dma {
            staging
                .free(f.virtual_address)
                .map_err(|e| format!("staging free on stop: {e}"))?;
        }
    }
    if let Some(own) = &own {
        for c in &clients {
            if let ClientFrame::Own { address, .. } = c {
                own.free(*address)
                    .map_err(|e| format!("allocator free: {e}"))?;
            }
        }
    }
    let stats = engine.stats();
    println!(
        "format: {} {}x{} @ {} fps, path {:?}",
        layout.pixel().name(),
        layout.width(),
        layout.height(),
        plan.fps,
        plan.path
    );
    println!("frames delivered: {delivered}");
    println!("frames dropped: {}", stats.dropped);
    println!("frames zero-copy: {}", stats.zero_copy);
    println!("frames copied: {}", stats.copied);
    println!("bytes copied: {bytes_copied}");
    println!("pitched copies: {pitched_copies}");
    println!("staging memory bytes: {}", plan.staging.bytes());
    println!(
        "allocator memory bytes: {}",
        allocator_buffer.as_ref().map_or(0, |b| b.region().len)
    );
    if let Some(own) = &own {
        println!(
            "pool high-water: {} of {}",
            own.high_water(),
            own.capacity()
        );
    }
    println!(
        "staging high-water: {} of {}",
        staging.high_water(),
        staging.capacity()
    );
    println!("output: {}", plan.out.display());
    let own_out = own.as_ref().map_or(0, FramePool::in_use);
    if own_out != 0 || staging.in_use() != 0 {
        return Err(format!(
            "leak: {own_out} allocator frames and {} staging slots still out",
            staging.in_use()
        ));
    }
    outputs.keep();
    Ok(())
}

/// What a run that stopped delivering says: how long, what the client
/// held, and what was delivered and dropped until then.
fn starved(plan: &Plan, intervals: u64, held: usize, delivered: u64, dropped: u64) -> String {
    let clients = plan.client_frames;
    let holding = if u32::try_from(held).is_ok_and(|h| h == clients) {
        format!("the client held all {clients} of its frames")
    } else {
        format!("the client held {held} of its {clients} frames")
    };
    format!(
        "no frame for {intervals} frame intervals: {holding} (--client-frames {clients}, \
         --hold {}); {delivered} frames delivered, {dropped} dropped",
        plan.hold
    )
}

/// Writes the 4:2:0 frame as an RGB PNG (BT.601 limited range back to RGB).
fn write_png(file: File, layout: &FrameLayout, planes: &Planes) -> Result<(), String> {
    let (w, h) = (layout.width() as usize, layout.height() as usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let luma = i32::from(planes.y[y * w + x]) - 16;
            let cb = i32::from(planes.u[(y / 2) * (w / 2) + x / 2]) - 128;
            let cr = i32::from(planes.v[(y / 2) * (w / 2) + x / 2]) - 128;
            let clamp = |v: i32| u8::try_from(v.clamp(0, 255)).unwrap_or(u8::MAX);
            rgb.push(clamp((298 * luma + 409 * cr + 128) >> 8));
            rgb.push(clamp((298 * luma - 100 * cb - 208 * cr + 128) >> 8));
            rgb.push(clamp((298 * luma + 516 * cb + 128) >> 8));
        }
    }
    let mut encoder = png::Encoder::new(BufWriter::new(file), layout.width(), layout.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A fresh, empty directory for one test's files.
    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("avscap-simulate-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    }

    /// Runs the command with `args` (an `--out` in `dir` added unless
    /// `args` has one) and returns its exit code and what it said on stderr.
    fn sim(dir: &Path, args: &[&str]) -> (u8, String) {
        let out = dir.join("out.y4m");
        let mut command_line: Vec<OsString> = vec!["simulate".into()];
        command_line.extend(args.iter().map(Into::into));
        if !args.contains(&"--out") {
            command_line.push("--out".into());
            command_line.push(out.into());
        }
        let mut log = Vec::new();
        let code = cli(command_line, &mut log);
        (code, String::from_utf8(log).expect("utf-8 log"))
    }

    /// A refusal: a non-zero exit, one line on stderr that names `flag`
    /// and holds every one of `words`, and no file left in `dir`.
    fn assert_refused(test: &str, args: &[&str], flag: &str, words: &[&str]) {
        let dir = scratch(test);
        let (code, log) = sim(&dir, args);
        assert_ne!(code, 0, "{args:?} exited 0: {log}");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {log}");
        let line = lines[0];
        assert!(line.starts_with("simulate: "), "{args:?}: {line}");
        assert!(line.contains(flag), "{args:?}: {line} does not name {flag}");
        for w in words {
            assert!(line.contains(w), "{args:?}: {line} does not say {w:?}");
        }
        assert!(
            !line.contains(" {") && !line.contains("Error"),
            "{args:?}: a Debug name in {line}"
        );
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("scratch")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn frames_zero_is_refused() {
        assert_refused("frames0", &["--frames", "0"], "--frames", &["at least 1"]);
    }

    #[test]
    fn a_hold_that_overflows_is_refused() {
        assert_refused(
            "holdmax",
            &["--frames", "5", "--hold", "18446744073709551615"],
            "--hold",
            &["at most 1000"],
        );
    }

    #[test]
    fn a_hold_above_the_limit_is_refused() {
        assert_refused(
            "hold1001",
            &["--frames", "5", "--hold", "1001"],
            "--hold",
            &["at most 1000"],
        );
    }

    #[test]
    fn allocator_frames_beyond_the_pool_are_refused_in_words() {
        assert_refused(
            "allocmax",
            &["--allocator-frames", "4294967295"],
            "--allocator-frames",
            &["4294967295 frames requested; at most 64"],
        );
        assert_refused(
            "alloc0",
            &["--allocator-frames", "0"],
            "--allocator-frames",
            &["at least 1"],
        );
    }

    #[test]
    fn staging_slots_beyond_the_pool_are_refused_in_words() {
        assert_refused(
            "staging1000",
            &["--staging-slots", "1000"],
            "--staging-slots",
            &["1000 frames requested; at most 64"],
        );
        assert_refused(
            "staging0",
            &["--staging-slots", "0"],
            "--staging-slots",
            &["at least 1"],
        );
    }

    #[test]
    fn client_frames_beyond_the_limit_are_refused() {
        assert_refused(
            "clients1e8",
            &["--path", "foreign", "--client-frames", "100000000"],
            "--client-frames",
            &["at most 64"],
        );
    }

    #[test]
    fn no_client_frames_is_refused() {
        assert_refused(
            "clients0",
            &["--client-frames", "0"],
            "--client-frames",
            &["at least 1"],
        );
    }

    #[test]
    fn own_client_frames_beyond_the_allocator_are_refused_before_running() {
        assert_refused(
            "ownclients",
            &["--path", "own", "--client-frames", "8"],
            "--client-frames",
            &["--allocator-frames"],
        );
    }

    #[test]
    fn a_client_pitch_beyond_the_limit_is_refused() {
        assert_refused(
            "pitchmax",
            &["--path", "foreign", "--client-pitch", "4294967295"],
            "--client-pitch",
            &["at most 65536"],
        );
    }

    #[test]
    fn flags_whose_buffers_exceed_the_memory_budget_are_refused() {
        assert_refused(
            "budget",
            &[
                "--format",
                "rgb24",
                "--size",
                "3840x2160",
                "--allocator-frames",
                "64",
                "--staging-slots",
                "64",
            ],
            "--allocator-frames",
            &["--staging-slots", "at most 2147483648 (2 GiB)"],
        );
    }

    #[test]
    fn a_size_or_rate_the_pin_does_not_offer_is_refused_with_what_it_offers() {
        assert_refused("size", &["--size", "10x10"], "--size", &["640x480"]);
        assert_refused("fps", &["--fps", "7"], "--fps", &["15, 30 or 60"]);
    }

    #[test]
    fn a_png_that_cannot_be_written_is_refused_before_the_video() {
        let dir = scratch("pngdir");
        let png = dir.join("no-such-directory").join("x.png");
        let png = png.to_str().expect("utf-8 path");
        assert_refused("png", &["--frames", "2", "--png", png], "--png", &[]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_same_file_for_video_and_png_is_refused() {
        let dir = scratch("samefile");
        let out = dir.join("a.y4m");
        let out = out.to_str().expect("utf-8 path");
        assert_refused(
            "same",
            &["--frames", "2", "--out", out, "--png", out],
            "--png",
            &["--out"],
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_flag_value_is_one_line() {
        assert_refused("badvalue", &["--frames", "many"], "--frames", &["many"]);
        assert_refused("unknown", &["--bogus"], "--bogus", &[]);
    }

    /// Progress lines count delivered frames (drops do not advance them)
    /// and say how much has been written; the last one matches the file.
    #[test]
    fn progress_counts_delivered_frames_and_bytes_written() {
        let dir = scratch("progress");
        let (code, log) = sim(
            &dir,
            &[
                "--size",
                "320x240",
                "--frames",
                "100",
                "--client-frames",
                "2",
                "--hold",
                "3",
            ],
        );
        assert_eq!(code, 0, "{log}");
        let written = std::fs::metadata(dir.join("out.y4m")).expect("out").len();
        let progress: Vec<&str> = log.lines().collect();
        assert_eq!(progress.len(), 10, "{log}");
        let last = progress[9];
        assert!(
            last.starts_with("simulate: 100/100 frames delivered, ")
                && last.contains(" dropped")
                && last.ends_with(&format!("{} written", human_bytes(written))),
            "{last} (file of {written} bytes)"
        );
        assert!(
            !last.contains(" 0 dropped"),
            "{last}: the slow client drops"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The flags as parsed and checked, `--out` in `dir`.
    fn plan(dir: &Path, args: &[&str]) -> Plan {
        let out = dir.join("out.y4m");
        let mut command_line: Vec<OsString> = vec!["simulate".into()];
        command_line.extend(args.iter().map(Into::into));
        command_line.extend(["--out".into(), out.into_os_string()]);
        let args = parse_args(command_line).expect("flags parse");
        validate(&args).expect("flags accepted")
    }

    /// A client that keeps every frame past the watchdog (only a plan that
    /// skips the `--hold` limit can ask for one) is reported for what it
    /// did, and the partial video goes.
    #[test]
    fn a_starved_client_is_reported_and_its_partial_output_removed() {
        let dir = scratch("starved");
        let mut plan = plan(
            &dir,
            &[
                "--size",
                "320x240",
                "--frames",
                "10",
                "--client-frames",
                "2",
            ],
        );
        plan.hold = 2 * STALL_INTERVALS;
        let outputs = Outputs::create(&plan).expect("outputs");
        assert!(plan.out.exists());
        let mut log = Vec::new();
        let e = run(&plan, outputs, &mut log).expect_err("a starved run fails");
        assert_eq!(
            e,
            format!(
                "no frame for {STALL_INTERVALS} frame intervals: the client held all 2 of \
                 its frames (--client-frames 2, --hold {}); 2 frames delivered, \
                 {STALL_INTERVALS} dropped",
                2 * STALL_INTERVALS
            )
        );
        assert!(!plan.out.exists(), "the partial video stayed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The longest hold the flags allow never trips the watchdog, even with
    /// a single client frame.
    #[test]
    fn the_longest_hold_allowed_completes() {
        let dir = scratch("maxhold");
        let max_hold = MAX_HOLD.to_string();
        let (code, log) = sim(
            &dir,
            &[
                "--size",
                "320x240",
                "--frames",
                "3",
                "--client-frames",
                "1",
                "--hold",
                &max_hold,
            ],
        );
        assert_eq!(code, 0, "{log}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An output past `LARGE_OUTPUT` is announced (with its size) before the
    /// run; a small one, or one to a device, is not.
    #[test]
    fn a_large_output_is_announced() {
        let dir = scratch("large");
        let big = plan(&dir, &["--size", "320x240", "--frames", "100000"]);
        assert_eq!(big.output_bytes(), 11_520_600_035);
        let warning = big.size_warning().expect("a warning");
        assert!(
            warning.starts_with("warning: --frames 100000 of 320x240 will write 10.7 GiB"),
            "{warning}"
        );
        assert!(plan(&dir, &["--frames", "60"]).size_warning().is_none());
        let mut to_null = big;
        to_null.out = PathBuf::from("/dev/null");
        if to_null.out.exists() {
            assert!(to_null.size_warning().is_none());
        }
        assert!(!dir.join("out.y4m").exists(), "checking created a file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What the plan sizes is what the run writes.
    #[test]
    fn the_planned_size_is_the_written_size() {
        let dir = scratch("size");
        let planned = plan(
            &dir,
            &["--format", "yuy2", "--size", "320x240", "--frames", "7"],
        );
        let (code, log) = sim(
            &dir,
            &["--format", "yuy2", "--size", "320x240", "--frames", "7"],
        );
        assert_eq!(code, 0, "{log}");
        let written = std::fs::metadata(dir.join("out.y4m")).expect("out").len();
        assert_eq!(planned.output_bytes(), written);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_limits_are_inclusive() {
        let dir = scratch("limits");
        let max_clients = MAX_CLIENT_FRAMES.to_string();
        let max_pitch = MAX_CLIENT_PITCH.to_string();
        let max_hold = MAX_HOLD.to_string();
        let p = plan(
            &dir,
            &[
                "--path",
                "foreign",
                "--size",
                "320x240",
                "--client-frames",
                &max_clients,
                "--client-pitch",
                &max_pitch,
                "--hold",
                &max_hold,
                "--staging-slots",
                "64",
                "--allocator-frames",
                "64",
            ],
        );
        assert_eq!(p.client_frames, MAX_CLIENT_FRAMES);
        assert_eq!(p.hold, MAX_HOLD);
        assert_eq!(p.foreign_extent, 360 * 65_536);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn human_bytes_reads_as_a_person_would() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(11_520_600_035), "10.7 GiB");
        assert_eq!(human_bytes(2 << 30), "2.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }

    /// clap's own consistency checks of the builder (ids, names, defaults).
    #[test]
    fn command_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn help_is_not_a_refusal() {
        let e = parse_args(["simulate", "--help"]).expect_err("help");
        assert!(!e.use_stderr());
    }
}
