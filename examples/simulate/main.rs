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

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use avscap::portable::capture_engine::{
    route_frame, CaptureEngine, ClientBuffer, DmaTarget, RouteError, Target, Tick,
};
use avscap::portable::frame_pool::FramePool;
use avscap::portable::framing::{self, AllocatorFraming, PinFraming};
use avscap::portable::image;
use avscap::portable::stream_memory::STAGING_SLOTS;
use avscap::portable::video_format::{FrameLayout, PixelFormat, VideoFormat, DATA_RANGES};
use clap::{Parser, ValueEnum};

mod heap_buffer;
mod planes;

use heap_buffer::HeapBuffer;
use planes::Planes;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Yuy2,
    Rgb24,
    Nv12,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PathArg {
    /// Every client frame comes from our allocator: zero-copy.
    Own,
    /// No client frame is ours: every frame is copied from a staging slot.
    Foreign,
    /// Alternate own and foreign frames.
    Mixed,
}

/// Simulate avscap's capture pipeline on the host and write the video.
#[derive(Debug, Parser)]
#[command(name = "simulate", about)]
struct Args {
    /// Pixel format of the pin connection.
    #[arg(long, value_enum, default_value_t = FormatArg::Nv12)]
    format: FormatArg,
    /// Frame size, `WIDTHxHEIGHT` (one of the sizes the pin offers).
    #[arg(long, default_value = "640x480", value_parser = parse_size)]
    size: (u32, u32),
    /// Frames per second: 15, 30 or 60.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Frames to deliver (the output has exactly this many).
    #[arg(long, default_value_t = 60)]
    frames: u32,
    /// Where client frames come from.
    #[arg(long, value_enum, default_value_t = PathArg::Mixed)]
    path: PathArg,
    /// Output YUV4MPEG2 file.
    #[arg(long, default_value = "avscap.y4m")]
    out: PathBuf,
    /// Also write the last frame as a PNG.
    #[arg(long)]
    png: Option<PathBuf>,
    /// Frames the pin's allocator framing asks for.
    #[arg(long, default_value_t = 4)]
    allocator_frames: u32,
    /// Staging slots for copied frames (the driver takes 2).
    #[arg(long, default_value_t = STAGING_SLOTS)]
    staging_slots: u32,
    /// Surface pitch of foreign client frames in bytes (`KS_FRAME_INFO`'s
    /// `lSurfacePitch`); 0 for packed rows. A pitch wider than the format's
    /// stride makes the copy go row by row.
    #[arg(long, default_value_t = 0)]
    client_pitch: u32,
    /// Client frames circulating (the depth of the KS queue).
    #[arg(long, default_value_t = 4)]
    client_frames: usize,
    /// Frame intervals the client keeps each delivered frame before
    /// returning it; a slow client starves the pin and frames drop.
    #[arg(long, default_value_t = 0)]
    hold: u64,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or("expected WIDTHxHEIGHT")?;
    Ok((
        w.parse().map_err(|e| format!("width: {e}"))?,
        h.parse().map_err(|e| format!("height: {e}"))?,
    ))
}

/// A client frame: one of ours (an address in the allocator's buffer) or a
/// client-owned buffer with its surface pitch.
enum ClientFrame {
    Own { address: usize, len: usize },
    Foreign { bytes: Vec<u8>, pitch: i32 },
}

/// Depth of the simulated hardware's target queue (the driver's).
const ENGINE_DEPTH: usize = 8;

impl ClientFrame {
    /// The frame's bytes: a slot of the allocator's buffer, or the client's
    /// own buffer.
    fn bytes<'a>(
        &'a mut self,
        allocator_buffer: &'a mut Option<HeapBuffer>,
    ) -> Result<&'a mut [u8], &'static str> {
        match self {
            ClientFrame::Own { address, len } => allocator_buffer
                .as_mut()
                .and_then(|b| b.at(*address, *len))
                .ok_or("own frame outside the allocator buffer"),
            ClientFrame::Foreign { bytes, .. } => Ok(bytes),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simulate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn find_format(args: &Args) -> Result<VideoFormat, String> {
    let pixel = match args.format {
        FormatArg::Yuy2 => PixelFormat::Yuy2,
        FormatArg::Rgb24 => PixelFormat::Rgb24,
        FormatArg::Nv12 => PixelFormat::Nv12,
    };
    DATA_RANGES
        .iter()
        .find(|f| f.pixel == pixel && (f.width, f.height) == args.size && f.fps() == args.fps)
        .copied()
        .ok_or_else(|| {
            format!(
                "the pin offers no {} {}x{} at {} fps",
                pixel.name(),
                args.size.0,
                args.size.1,
                args.fps
            )
        })
}

#[allow(clippy::too_many_lines)]
fn run(args: &Args) -> Result<(), String> {
    let format = find_format(args)?;
    let layout = format.layout().map_err(|e| format!("{e:?}"))?;
    let image = layout.image_size() as usize;
    let pitch = i32::try_from(args.client_pitch)
        .map_err(|_| format!("--client-pitch {} is too large", args.client_pitch))?;
    if pitch != 0 && args.client_pitch < layout.stride() {
        return Err(format!(
            "--client-pitch {} is below the format's stride of {} bytes",
            args.client_pitch,
            layout.stride()
        ));
    }

    // STOP -> ACQUIRE: the stream's staging slots, sized for its format.
    let staging_plan =
        framing::staging_plan(&layout, args.staging_slots).map_err(|e| format!("{e:?}"))?;
    let mut staging_buffer = HeapBuffer::new(staging_plan.bytes());
    let staging = FramePool::over(staging_buffer.region(), &staging_plan)
        .map_err(|e| format!("staging: {e:?}"))?;

    // InitializeAllocator, only when the graph uses the pin's allocator:
    // its own buffer, sized from the request the graph derives from our
    // framing.
    let allocator = if args.path == PathArg::Foreign {
        None
    } else {
        let pin_framing =
            PinFraming::for_format(&format, args.allocator_frames).map_err(|e| format!("{e:?}"))?;
        let request = AllocatorFraming::from_pin(&pin_framing);
        let plan = framing::allocator_plan(&request, layout.image_size()).map_err(|e| {
            format!(
                "allocator refused its framing: {e:?} (NTSTATUS {:#x})",
                e.ntstatus()
            )
        })?;
        let buffer = HeapBuffer::new(plan.bytes());
        let pool = FramePool::over(buffer.region(), &plan).map_err(|e| format!("{e:?}"))?;
        Some((buffer, pool))
    };
    let (mut allocator_buffer, own) = match allocator {
        Some((buffer, pool)) => (Some(buffer), Some(pool)),
        None => (None, None),
    };

    // The client's frames.
    let mut clients: Vec<ClientFrame> = Vec::new();
    for i in 0..args.client_frames {
        let use_own = match args.path {
            PathArg::Own => true,
            PathArg::Foreign => false,
            PathArg::Mixed => i % 2 == 0,
        };
        let frame = if let (Some(own), true) = (&own, use_own) {
            let f = own
                .allocate()
                .ok_or("the allocator ran out of frames: raise --allocator-frames")?;
            ClientFrame::Own {
                address: f.virtual_address,
                len: f.len as usize,
            }
        } else {
            let extent = if pitch == 0 {
                image
            } else {
                (image / layout.stride() as usize) * args.client_pitch as usize
            };
            ClientFrame::Foreign {
                bytes: vec![0u8; extent],
                pitch,
            }
        };
        clients.push(frame);
    }
    let mut ready: VecDeque<usize> = (0..clients.len()).collect();
    let mut held: VecDeque<(u64, usize)> = VecDeque::new();

    let out = File::create(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut out = BufWriter::new(out);
    let mut y4m = y4m::encode(
        layout.width() as usize,
        layout.height() as usize,
        y4m::Ratio::new(args.fps as usize, 1),
    )
    .with_colorspace(y4m::Colorspace::C420jpeg)
    .write_header(&mut out)
    .map_err(|e| format!("y4m: {e:?}"))?;

    let mut engine =
        CaptureEngine::<usize, ENGINE_DEPTH>::new(format.frame_interval, layout.image_size())
            .map_err(|e| format!("{e:?}"))?;
    engine.run(0);
    let mut planes = Planes::new(&layout);
    let mut tick_count = 0u64;
    let mut bytes_copied = 0u64;
    let mut pitched_copies = 0u64;
    let mut delivered = 0u64;
    let progress_every = u64::from(args.frames / 10).max(1);
    while delivered < u64::from(args.frames) {
        // The client returns frames it is done with.
        while held.front().is_some_and(|&(until, _)| until <= tick_count) {
            ready.push_back(held.pop_front().ok_or("held")?.1);
        }
        // Process: route queued client frames to DMA targets.
        while engine.has_room() {
            let Some(&id) = ready.front() else { break };
            let client = match &clients[id] {
                ClientFrame::Own { address, len } => ClientBuffer {
                    address: *address,
                    extent: u32::try_from(*len).unwrap_or(u32::MAX),
                    surface_pitch: 0,
                },
                ClientFrame::Foreign { bytes, pitch } => ClientBuffer {
                    address: bytes.as_ptr() as usize,
                    extent: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
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
                        .map_err(|_| "queue full")?;
                    ready.pop_front();
                }
                Err(RouteError::NoStagingSlot) => break, // Process pends
                Err(e) => return Err(format!("{e:?}")),
            }
        }
        // The timer DPC: bookkeeping only.
        let now = engine.next_due().ok_or("engine stopped")?;
        tick_count += 1;
        if let Tick::Dropped { .. } | Tick::Idle = engine.tick(now) {
            if tick_count > u64::from(args.frames) * 1000 + 1000 {
                return Err("no frame is being delivered".into());
            }
            continue;
        }
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
            image::synthesize(pixels, &layout, layout.stride(), &overlay)
                .map_err(|e| format!("synthesis: {e:?}"))?;
            let id = c.target.cookie;
            // Rows of the delivered frame are this far apart.
            let row_pitch = if let DmaTarget::Staging(_) = c.target.dma {
                let slot = staging_buffer
                    .get(target.virtual_address, image)
                    .ok_or("staging slot outside its buffer")?;
                let plan = c.target.copy_plan(&layout).ok_or("no copy plan")?;
                let dest = clients[id].bytes(&mut allocator_buffer)?;
                plan.copy(slot, dest)
                    .map_err(|_| "the client frame is shorter than the copy plan")?;
                bytes_copied += plan.bytes_copied();
                pitched_copies += u64::from(!plan.is_packed());
                staging
                    .free(target.virtual_address)
                    .map_err(|e| format!("staging free: {e:?}"))?;
                if plan.is_packed() {
                    layout.stride()
                } else {
                    plan.dest_pitch
                }
            } else {
                layout.stride()
            };
            let frame = clients[id].bytes(&mut allocator_buffer)?;
            planes.convert(&layout, frame, row_pitch as usize);
            y4m.write_frame(&y4m::Frame::new([&planes.y, &planes.u, &planes.v], None))
                .map_err(|e| format!("y4m: {e:?}"))?;
            held.push_back((tick_count + args.hold, id));
            delivered += 1;
            if args.frames >= 100 && delivered.is_multiple_of(progress_every) {
                eprintln!("simulate: {delivered}/{} frames", args.frames);
            }
        }
    }
    out.flush()
        .map_err(|e| format!("{}: {e}", args.out.display()))?;

    if let Some(png_path) = &args.png {
        write_png(png_path, &layout, &planes)?;
    }

    // ACQUIRE -> STOP: every in-flight target comes back and the staging
    // slots go; then the client closes the allocator, which must find every
    // frame home (DeleteAllocator frees its buffer).
    engine.stop();
    while let Some(t) = engine.take_queued() {
        if let DmaTarget::Staging(f) = t.dma {
            staging
                .free(f.virtual_address)
                .map_err(|e| format!("staging free on stop: {e:?}"))?;
        }
    }
    if let Some(own) = &own {
        for c in &clients {
            if let ClientFrame::Own { address, .. } = c {
                own.free(*address)
                    .map_err(|e| format!("allocator free: {e:?}"))?;
            }
        }
    }
    let stats = engine.stats();
    println!(
        "format: {} {}x{} @ {} fps, path {:?}",
        layout.pixel().name(),
        layout.width(),
        layout.height(),
        args.fps,
        args.path
    );
    println!("frames delivered: {delivered}");
    println!("frames dropped: {}", stats.dropped);
    println!("frames zero-copy: {}", stats.zero_copy);
    println!("frames copied: {}", stats.copied);
    println!("bytes copied: {bytes_copied}");
    println!("pitched copies: {pitched_copies}");
    println!("staging memory bytes: {}", staging_plan.bytes());
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
    println!("output: {}", args.out.display());
    let own_out = own.as_ref().map_or(0, FramePool::in_use);
    if own_out != 0 || staging.in_use() != 0 {
        return Err(format!(
            "leak: {own_out} allocator frames and {} staging slots still out",
            staging.in_use()
        ));
    }
    Ok(())
}

/// Writes the 4:2:0 frame as an RGB PNG (BT.601 limited range back to RGB).
fn write_png(path: &PathBuf, layout: &FrameLayout, planes: &Planes) -> Result<(), String> {
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
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), layout.width(), layout.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}
