//! Scratch.
use avscap::portable::video_format::{PixelFormat, DATA_RANGES};
use avscap_kernel_emu::ks::state;
use avscap_kernel_emu::{Config, Driver};

#[test]
fn boots() {
    let mut d = match Driver::boot(Config::default()) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let f = *DATA_RANGES
        .iter()
        .find(|f| f.pixel == PixelFormat::Yuy2 && f.width == 320 && f.height == 240)
        .unwrap();
    let filter = d.create_filter().unwrap();
    let pin = d.connect(filter, &f).unwrap().unwrap();
    d.set_state(pin, state::RUN)
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let size = f.layout().unwrap().image_size;
    for _ in 0..4 {
        d.queue_user_frame(pin, size, 0).unwrap();
    }
    let r = d.advance(3_333_333 * 2);
    if let Err(e) = r {
        panic!("{e}\nlog: {}", d.log());
    }
    let done = d.take_completed(pin);
    eprintln!("completed {}", done.len());
    for c in &done {
        eprintln!(
            "{} {} {} {:?} {:x}",
            c.data_used, c.presentation_time, c.duration, c.frame_info, c.options_flags
        );
    }
    eprintln!(
        "memcpy {:?}",
        d.uc.get_data()
            .nt
            .memcpy
            .iter()
            .filter(|l| **l > 1000)
            .count()
    );
    eprintln!("log: {}", d.log());
}
