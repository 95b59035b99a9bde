//! Figures 6 and 7 as one SVG: traffic against n, and CPU time against n.

use std::path::Path;

use plotters::prelude::*;

use super::Op;
use super::measure::Row;

fn color(op: Op) -> RGBColor {
    match op {
        Op::Create => RGBColor(31, 119, 180),
        Op::Add => RGBColor(214, 39, 40),
        Op::Remove => RGBColor(44, 160, 44),
        Op::Update => RGBColor(148, 103, 189),
        Op::Message => RGBColor(255, 127, 14),
    }
}

/// The value range of `ys`, widened for a log axis.
fn log_range(ys: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if lo > hi {
        return 0.001..1.0;
    }
    (lo.max(1e-3) / 1.5)..(hi.max(1e-3) * 1.5)
}

/// Draws both figures into `path` (`coalesced`: the marginal costs with coalesced acks).
pub(super) fn draw(path: &Path, rows: &[Row], coalesced: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mode = if coalesced { ", coalesced acks, marginal" } else { "" };
    let mut ops: Vec<Op> = rows.iter().map(|r| r.op).collect();
    ops.dedup();
    let n_lo = rows.iter().map(|r| r.n).min().unwrap_or(1) as f64;
    let n_hi = rows.iter().map(|r| r.n).max().unwrap_or(2) as f64;
    let xs = (n_lo / 1.1)..(n_hi * 1.1);
    let series = |op: Op, f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter().filter(|r| r.op == op).filter_map(|r| f(r).map(|y| (r.n as f64, y.max(1e-3)))).collect()
    };

    let root = SVGBackend::new(path, (960, 1280)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(620);

    let kib = |r: &Row| Some(r.traffic as f64 / 1024.0);
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("Network traffic per operation (each message once{mode})"), ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xs.clone().log_scale(), log_range(rows.iter().filter_map(kib)).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("group size n")
        .y_desc("traffic (KiB)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for op in &ops {
        let c = color(*op);
        chart
            .draw_series(LineSeries::new(series(*op, &kib), c.stroke_width(2)))?
            .label(op.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).draw()?;

    let cpu = rows.iter().flat_map(|r| [Some(r.sender_median), Some(r.recipient_median), r.newcomer_median]).flatten();
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!("CPU time per member (median{mode}; solid: sender, dashed: recipient, dotted: newcomer)"),
            ("sans-serif", 18),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xs.log_scale(), log_range(cpu).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("group size n")
        .y_desc("CPU time (ms)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for op in &ops {
        let c = color(*op);
        chart
            .draw_series(LineSeries::new(series(*op, &|r| Some(r.sender_median)), c.stroke_width(2)))?
            .label(format!("{} (sender)", op.name()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(series(*op, &|r| Some(r.recipient_median)), 6, 4, c.stroke_width(2)))?
            .label(format!("{} (recipient)", op.name()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], c.stroke_width(2)));
        if *op == Op::Add {
            chart
                .draw_series(DashedLineSeries::new(series(*op, &|r| r.newcomer_median), 2, 3, c.stroke_width(2)))?
                .label("add (newcomer)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 3, y)], c.stroke_width(2)));
        }
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
