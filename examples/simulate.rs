//! Host simulator for avscap (not part of the driver).
//!
//! Runs the driver's portable core the way the kernel shell does, in virtual
//! time, and writes what the camera would show:
//! * a heap buffer stands in for the device's common buffer; the allocator's
//!   frame pool and the staging slots are carved out of it exactly as
//!   `InitializeAllocator` and device Start carve the real one;
//! * a client queue of frames stands in for ks.sys: `own` frames come from
//!   our allocator (a kernel-to-kernel connection, written in place),
//!   `foreign` frames are client buffers (a user-mode connection such as
//!   GraphEdit's renderer or the Camera app, filled by copying), `mixed`
//!   alternates;
//! * "Process" routes each client frame to a DMA target and queues it; each
//!   "timer tick" runs the capture engine, synthesizes the image into the
//!   target, copies staging slots out, and hands the frame to the client,
//!   which writes it to a YUV4MPEG2 file (4:2:0, packed formats converted).
//!
//! `cargo run --example simulate -- --help` lists the flags.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use avscap::portable::capture_engine::{
    route_frame, CaptureEngine, DmaTarget, RouteError, Target, Tick,
};
use avscap::portable::frame_pool::{FramePool, Region};
use avscap::portable::framing::{self, AllocatorFraming, CarveOut, PinFraming, PAGE_SIZE};
use avscap::portable::image::{self, Rgb};
use avscap::portable::video_format::{FrameLayout, PixelFormat, VideoFormat, DATA_RANGES};
use clap::{Parser, ValueEnum};

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
    /// Staging slots for copied frames.
    #[arg(long, default_value_t = 2)]
    staging_slots: u32,
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

/// A client frame: one of ours (an offset into the common buffer) or a
/// client-owned buffer.
enum ClientFrame {
    Own { offset: usize, address: usize },
    Foreign(Vec<u8>),
}

/// Depth of the simulated hardware's target queue.
const ENGINE_DEPTH: usize = 8;

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
    let image = layout.image_size as usize;
    let slot = layout.image_size.next_multiple_of(PAGE_SIZE) as usize;

    // The stand-in common buffer: allocator carve-out, then staging slots,
    // with a page of slack each for aligning a heap buffer.
    let own_len = slot * args.allocator_frames as usize + PAGE_SIZE as usize;
    let staging_len = slot * args.staging_slots as usize + PAGE_SIZE as usize;
    let mut common = vec![0u8; own_len + staging_len];
    let base = common.as_ptr() as usize;
    let region = Region {
        virtual_base: base,
        logical_base: 0x8000_0000 + (base % PAGE_SIZE as usize) as u64,
        len: common.len(),
    };
    let own_region = region.sub_region(0, own_len).ok_or("carve-out")?;
    let staging_region = region.sub_region(own_len, staging_len).ok_or("carve-out")?;

    // InitializeAllocator: the request the graph derives from our framing.
    let pin_framing =
        PinFraming::for_format(&format, args.allocator_frames).map_err(|e| format!("{e:?}"))?;
    let request = AllocatorFraming::from_pin(&pin_framing);
    let max_frame_size = u32::try_from(slot).map_err(|_| "frame too large")?;
    let carve = CarveOut {
        region: own_region,
        max_frame_size,
        max_frames: args.allocator_frames,
    };
    let own = FramePool::for_request(&request, layout.image_size, &carve).map_err(|e| {
        format!(
            "allocator refused its framing: {e:?} (NTSTATUS {:#x})",
            e.ntstatus()
        )
    })?;
    let staging_plan = framing::staging_plan(&layout, args.staging_slots, &staging_region)
        .map_err(|e| format!("{e:?}"))?;
    let staging = FramePool::with_plan(staging_region, staging_plan);

    // The client's frames.
    let mut clients: Vec<ClientFrame> = Vec::new();
    for i in 0..args.client_frames {
        let use_own = match args.path {
            PathArg::Own => true,
            PathArg::Foreign => false,
            PathArg::Mixed => i % 2 == 0,
        };
        clients.push(if use_own {
            let f = own
                .allocate()
                .ok_or("the allocator ran out of frames: raise --allocator-frames")?;
            ClientFrame::Own {
                offset: f.virtual_address - base,
                address: f.virtual_address,
            }
        } else {
            ClientFrame::Foreign(vec![0u8; image])
        });
    }
    let mut ready: VecDeque<usize> = (0..clients.len()).collect();
    let mut held: VecDeque<(u64, usize)> = VecDeque::new();

    let out = File::create(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut out = BufWriter::new(out);
    let mut y4m = y4m::encode(
        layout.width as usize,
        layout.height as usize,
        y4m::Ratio::new(args.fps as usize, 1),
    )
    .with_colorspace(y4m::Colorspace::C420jpeg)
    .write_header(&mut out)
    .map_err(|e| format!("y4m: {e:?}"))?;

    let mut engine =
        CaptureEngine::<usize, ENGINE_DEPTH>::new(format.frame_interval, layout.image_size)
            .map_err(|e| format!("{e:?}"))?;
    engine.run(0);
    let mut planes = Planes::new(&layout);
    let mut tick_count = 0u64;
    let progress_every = u64::from(args.frames / 10).max(1);
    while engine.stats().delivered < u64::from(args.frames) {
        // The client returns frames it is done with.
        while held.front().is_some_and(|&(until, _)| until <= tick_count) {
            ready.push_back(held.pop_front().ok_or("held")?.1);
        }
        // Process: route queued client frames to DMA targets.
        while engine.has_room() {
            let Some(&id) = ready.front() else { break };
            let (address, extent) = match &clients[id] {
                ClientFrame::Own { address, .. } => (*address, layout.image_size),
                ClientFrame::Foreign(buf) => (
                    buf.as_ptr() as usize,
                    u32::try_from(buf.len()).unwrap_or(u32::MAX),
                ),
            };
            match route_frame(Some(&own), &staging, address, extent, layout.image_size) {
                Ok(dma) => {
                    engine
                        .submit(Target { cookie: id, dma })
                        .map_err(|_| "queue full")?;
                    ready.pop_front();
                }
                Err(RouteError::NoStagingSlot) => break, // Process pends
                Err(e) => return Err(format!("{e:?}")),
            }
        }
        // The timer DPC.
        let now = engine.next_due().ok_or("engine stopped")?;
        tick_count += 1;
        if let Tick::Deliver(c) = engine.tick(now) {
            let target = c.target.dma.frame();
            let offset = target.virtual_address - base;
            let overlay = c.overlay();
            image::synthesize(
                &mut common[offset..offset + image],
                &layout,
                layout.stride,
                &overlay,
            )
            .map_err(|e| format!("synthesis: {e:?}"))?;
            let id = c.target.cookie;
            if let DmaTarget::Staging(_) = c.target.dma {
                match &mut clients[id] {
                    ClientFrame::Own { offset: dst, .. } => {
                        common.copy_within(offset..offset + image, *dst);
                    }
                    ClientFrame::Foreign(buf) => {
                        buf.copy_from_slice(&common[offset..offset + image]);
                    }
                }
                staging
                    .free(target.virtual_address)
                    .map_err(|e| format!("staging free: {e:?}"))?;
            }
            let frame = match &clients[id] {
                ClientFrame::Own { offset, .. } => &common[*offset..*offset + image],
                ClientFrame::Foreign(buf) => &buf[..],
            };
            planes.convert(&layout, frame);
            y4m.write_frame(&y4m::Frame::new([&planes.y, &planes.u, &planes.v], None))
                .map_err(|e| format!("y4m: {e:?}"))?;
            held.push_back((tick_count + args.hold, id));
            if args.frames >= 100 && c.picture_number % progress_every == 0 {
                eprintln!(
                    "simulate: {}/{} frames",
                    engine.stats().delivered,
                    args.frames
                );
            }
        }
        if tick_count > u64::from(args.frames) * 1000 + 1000 {
            return Err("no frame is being delivered".into());
        }
    }
    out.flush()
        .map_err(|e| format!("{}: {e}", args.out.display()))?;

    if let Some(png_path) = &args.png {
        write_png(png_path, &layout, &planes)?;
    }

    // Stop: every in-flight target comes back; then the client closes the
    // allocator, which must find every frame home (DeleteAllocator).
    engine.stop();
    while let Some(t) = engine.take_queued() {
        if let DmaTarget::Staging(f) = t.dma {
            staging
                .free(f.virtual_address)
                .map_err(|e| format!("staging free on stop: {e:?}"))?;
        }
    }
    for c in &clients {
        if let ClientFrame::Own { address, .. } = c {
            own.free(*address)
                .map_err(|e| format!("allocator free: {e:?}"))?;
        }
    }
    let stats = engine.stats();
    println!(
        "format: {} {}x{} @ {} fps, path {:?}",
        layout.pixel.name(),
        layout.width,
        layout.height,
        args.fps,
        args.path
    );
    println!("frames delivered: {}", stats.delivered);
    println!("frames dropped: {}", stats.dropped);
    println!("frames zero-copy: {}", stats.zero_copy);
    println!("frames copied: {}", stats.copied);
    println!("bytes copied: {}", stats.bytes_copied);
    println!(
        "pool high-water: {} of {}",
        own.high_water(),
        own.capacity()
    );
    println!(
        "staging high-water: {} of {}",
        staging.high_water(),
        staging.capacity()
    );
    println!("pool overhead bytes: {}", own.plan().overhead);
    println!("output: {}", args.out.display());
    if own.in_use() != 0 || staging.in_use() != 0 {
        return Err(format!(
            "leak: {} allocator frames and {} staging slots still out",
            own.in_use(),
            staging.in_use()
        ));
    }
    Ok(())
}

/// A 4:2:0 planar frame (the y4m payload).
struct Planes {
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl Planes {
    fn new(layout: &FrameLayout) -> Self {
        let (w, h) = (layout.width as usize, layout.height as usize);
        Planes {
            y: vec![0; w * h],
            u: vec![0; w * h / 4],
            v: vec![0; w * h / 4],
        }
    }

    /// Converts a frame of any supported format into 4:2:0 planes
    /// (chroma of packed formats averaged over each 2x2 block).
    fn convert(&mut self, layout: &FrameLayout, frame: &[u8]) {
        let (w, h, stride) = (
            layout.width as usize,
            layout.height as usize,
            layout.stride as usize,
        );
        let cw = w / 2;
        match layout.pixel {
            PixelFormat::Nv12 => {
                for row in 0..h {
                    self.y[row * w..(row + 1) * w]
                        .copy_from_slice(&frame[row * stride..row * stride + w]);
                }
                let chroma = &frame[layout.chroma_offset as usize..];
                for row in 0..h / 2 {
                    for col in 0..cw {
                        self.u[row * cw + col] = chroma[row * stride + 2 * col];
                        self.v[row * cw + col] = chroma[row * stride + 2 * col + 1];
                    }
                }
            }
            PixelFormat::Yuy2 => {
                for row in 0..h {
                    let line = &frame[row * stride..];
                    for col in 0..w {
                        self.y[row * w + col] = line[2 * col];
                    }
                }
                for row in 0..h / 2 {
                    let (a, b) = (&frame[2 * row * stride..], &frame[(2 * row + 1) * stride..]);
                    for col in 0..cw {
                        self.u[row * cw + col] = avg2(a[4 * col + 1], b[4 * col + 1]);
                        self.v[row * cw + col] = avg2(a[4 * col + 3], b[4 * col + 3]);
                    }
                }
            }
            PixelFormat::Rgb24 => {
                let pixel = |x: usize, y: usize| {
                    // Bottom-up DIB: image row y is memory row h-1-y.
                    let p = (h - 1 - y) * stride + 3 * x;
                    image::rgb_to_yuv(Rgb {
                        r: frame[p + 2],
                        g: frame[p + 1],
                        b: frame[p],
                    })
                };
                for y in 0..h {
                    for x in 0..w {
                        self.y[y * w + x] = pixel(x, y).y;
                    }
                }
                for y in 0..h / 2 {
                    for x in 0..cw {
                        let q = [
                            pixel(2 * x, 2 * y),
                            pixel(2 * x + 1, 2 * y),
                            pixel(2 * x, 2 * y + 1),
                            pixel(2 * x + 1, 2 * y + 1),
                        ];
                        self.u[y * cw + x] = avg4(q.map(|c| c.u));
                        self.v[y * cw + x] = avg4(q.map(|c| c.v));
                    }
                }
            }
        }
    }
}

fn avg2(a: u8, b: u8) -> u8 {
    u8::try_from((u16::from(a) + u16::from(b)).div_ceil(2)).unwrap_or(u8::MAX)
}

fn avg4(v: [u8; 4]) -> u8 {
    u8::try_from((v.iter().map(|&x| u16::from(x)).sum::<u16>() + 2) / 4).unwrap_or(u8::MAX)
}

/// Writes the 4:2:0 frame as an RGB PNG (BT.601 limited range back to RGB).
fn write_png(path: &PathBuf, layout: &FrameLayout, planes: &Planes) -> Result<(), String> {
    let (w, h) = (layout.width as usize, layout.height as usize);
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
    let mut encoder = png::Encoder::new(BufWriter::new(file), layout.width, layout.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}
