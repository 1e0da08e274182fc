//! Loss curves as a standalone SVG image.

use smith::Result;
use std::fmt::Write;
use std::path::Path;

const W: f64 = 800.0;
const H: f64 = 450.0;
const PAD: f64 = 60.0;

/// Draws training loss (thin) and held-out loss (thick, with points) against step.
pub fn write_loss_svg(path: &Path, train: &[(u64, f64)], val: &[(u64, f64)]) -> Result<()> {
    let all = train.iter().chain(val).filter(|(_, l)| l.is_finite());
    let (mut max_step, mut lo, mut hi) = (1u64, f64::INFINITY, f64::NEG_INFINITY);
    for &(s, l) in all {
        max_step = max_step.max(s);
        lo = lo.min(l);
        hi = hi.max(l);
    }
    if !lo.is_finite() {
        lo = 0.0;
        hi = 1.0;
    }
    let (lo, hi) = (lo.floor().max(0.0), hi.ceil().max(lo.floor() + 1.0));
    let x = |s: u64| PAD + (s as f64 / max_step as f64) * (W - 2.0 * PAD);
    let y = |l: f64| H - PAD - (l - lo) / (hi - lo) * (H - 2.0 * PAD);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = write!(
        svg,
        r#"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="black"/>"#,
        b = H - PAD,
        r = W - PAD
    );
    for i in 0..=5 {
        let l = lo + (hi - lo) * i as f64 / 5.0;
        let s = (max_step as f64 * i as f64 / 5.0) as u64;
        let _ = write!(
            svg,
            r##"<text x="{tx}" y="{ty}" text-anchor="end">{l:.2}</text><line x1="{PAD}" y1="{ty0}" x2="{r}" y2="{ty0}" stroke="#eee"/><text x="{sx}" y="{sy}" text-anchor="middle">{s}</text>"##,
            tx = PAD - 6.0,
            ty = y(l) + 4.0,
            ty0 = y(l),
            r = W - PAD,
            sx = x(s),
            sy = H - PAD + 18.0
        );
    }
    let poly = |pts: &[(u64, f64)]| {
        pts.iter()
            .filter(|(_, l)| l.is_finite())
            .map(|&(s, l)| format!("{:.1},{:.1}", x(s), y(l)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#4a7bd0" stroke-width="1" points="{}"/>"##,
        poly(train)
    );
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#d0452f" stroke-width="2.5" points="{}"/>"##,
        poly(val)
    );
    for &(s, l) in val.iter().filter(|(_, l)| l.is_finite()) {
        let _ = write!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#d0452f"/>"##,
            x(s),
            y(l)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{cx}" y="24" text-anchor="middle" font-size="15">loss (nats per token) by step</text><text x="{lx}" y="44" fill="#4a7bd0">train</text><text x="{lx2}" y="44" fill="#d0452f">held-out</text><text x="{cx}" y="{by}" text-anchor="middle">step</text></svg>"##,
        cx = W / 2.0,
        lx = W - PAD - 110.0,
        lx2 = W - PAD - 60.0,
        by = H - 15.0
    );
    smith::io::write_atomic(path, svg.as_bytes())
}
