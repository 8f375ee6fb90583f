//! The page's charts as inline SVG, drawn by plotters' SVG backend into a String: drops over
//! time (stacked by reason, the node-state change marked) and packet-path swimlanes.
#![expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "chart coordinates: counts, seconds and bins far below 2^52"
)]
use std::collections::BTreeMap;

use plotters::prelude::*;

use super::{
    model::{Packet, Report},
    sentences::clock,
    state::Op,
};

/// Bars at most: a week-long capture still draws a few hundred rectangles per reason.
const MAX_BINS: i64 = 150;
/// Reasons drawn one by one; the rest are stacked as `other`.
const MAX_SERIES: usize = 7;
const PALETTE: [RGBColor; 8] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// plotters writes `xmlns="http://…"`; inline SVG in HTML needs no namespace, and the page must
/// hold no URL of any kind.
fn inline(svg: &str) -> String {
    svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "").replace("xmlns=\"http://www.w3.org/2000/svg\"", "")
}

/// Where the node state is known to have changed: after the last drop by a rule that is gone
/// at the end, else anywhere in the window (the snapshots bracket it).
pub fn change_span(r: &Report) -> Option<(i128, i128)> {
    let mut span: Option<(i128, i128)> = None;
    for n in &r.nodes {
        let Some(c) = n.changes.as_ref().filter(|c| c.ruleset_or_routes()) else { continue };
        let (Some(s), Some(e)) = n.window() else { continue };
        let removed: Vec<&str> = c.list.iter().filter(|x| x.op == Op::Removed && x.kind == "rule").map(|x| x.text.as_str()).collect();
        let after = n
            .groups
            .iter()
            .filter(|(k, _)| matches!(&k.culprit, super::event::Culprit::Rule(nf) if nf.rule.as_deref().is_some_and(|t| removed.contains(&t))))
            .filter_map(|(_, g)| g.last_ns)
            .max()
            .unwrap_or(s);
        span = Some(span.map_or((after, e), |(a, b)| (a.min(after), b.max(e))));
    }
    span
}

/// Drops per time bin, stacked by reason. None when there is nothing to draw.
pub fn over_time(r: &Report) -> Option<(String, i64)> {
    let (Some(start), Some(end)) = r.window() else { return None };
    let start_s = i64::try_from(start.div_euclid(1_000_000_000)).ok()?;
    let end_s = i64::try_from(end.div_euclid(1_000_000_000)).ok()? + 1;
    let span = (end_s - start_s).max(1);
    let bin = (span + MAX_BINS - 1) / MAX_BINS;
    let bins = usize::try_from((span + bin - 1) / bin).ok()?;
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for n in &r.nodes {
        for per in n.per_sec.values() {
            for (k, v) in per {
                *totals.entry(k.as_str()).or_default() += v;
            }
        }
    }
    if totals.is_empty() {
        return None;
    }
    let mut order: Vec<(&str, u64)> = totals.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut names: Vec<String> = order.iter().take(MAX_SERIES).map(|(k, _)| (*k).to_string()).collect();
    if order.len() > MAX_SERIES {
        names.push("other".into());
    }
    let mut grid = vec![vec![0u64; names.len()]; bins];
    for n in &r.nodes {
        for (sec, per) in &n.per_sec {
            let Ok(b) = usize::try_from((sec - start_s).clamp(0, span - 1) / bin) else { continue };
            for (k, v) in per {
                let i = names.iter().position(|x| x == k).unwrap_or(names.len() - 1);
                grid[b.min(bins - 1)][i] += v;
            }
        }
    }
    let ymax = grid.iter().map(|b| b.iter().sum::<u64>()).max().unwrap_or(1).max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 360)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let x_end = (bins as i64 * bin) as f64;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(40)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_end, 0f64..(ymax as f64 * 1.1))
            .ok()?;
        let fmt_x = |x: &f64| clock(start + (*x as i128) * 1_000_000_000);
        let per = if bin == 1 { "drops per second".to_string() } else { format!("drops per {bin} s") };
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&fmt_x)
            .y_desc(per)
            .x_desc("time (UTC)")
            .light_line_style(TRANSPARENT)
            .draw()
            .ok()?;
        if let Some((a, b)) = change_span(r) {
            let xa = ((a - start) as f64 / 1e9).max(0.0);
            let xb = ((b - start) as f64 / 1e9).clamp(xa, x_end);
            chart
                .draw_series(std::iter::once(Rectangle::new([(xa, 0.0), (xb.max(xa + x_end / 400.0), ymax as f64 * 1.1)], RGBColor(0xff, 0xd7, 0x00).mix(0.25).filled())))
                .ok()?
                .label("node state changed in this span (start/end snapshots)")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], RGBColor(0xff, 0xd7, 0x00).filled()));
            chart.draw_series(std::iter::once(PathElement::new(vec![(xa, 0.0), (xa, ymax as f64 * 1.1)], RGBColor(0xb8, 0x86, 0x0b).stroke_width(2)))).ok()?;
        }
        for (i, name) in names.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let rects = grid.iter().enumerate().filter(|(_, b)| b[i] > 0).map(|(bi, b)| {
                let below: u64 = b[..i].iter().sum();
                let x0 = (bi as i64 * bin) as f64;
                Rectangle::new([(x0, below as f64), (x0 + bin as f64 * 0.9, (below + b[i]) as f64)], color.filled())
            });
            chart.draw_series(rects).ok()?.label(name.clone()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).position(SeriesLabelPosition::UpperRight).draw().ok()?;
        root.present().ok()?;
    }
    Some((inline(&svg), bin))
}

/// One followed packet: hooks over time, one lane per network namespace.
pub fn swimlane(p: &Packet) -> Option<String> {
    let t0 = p.hops.iter().filter_map(|h| h.t_ns).min()?;
    let mut lanes: Vec<u64> = Vec::new();
    for h in &p.hops {
        let ns = h.netns.unwrap_or(0);
        if !lanes.contains(&ns) {
            lanes.push(ns);
        }
    }
    let points: Vec<(f64, i32, String)> = p
        .hops
        .iter()
        .filter_map(|h| {
            let t = h.t_ns? .saturating_sub(t0) as f64 / 1000.0;
            let lane = i32::try_from(lanes.iter().position(|l| *l == h.netns.unwrap_or(0))?).ok()?;
            let dev = h.ifname.as_deref().filter(|d| !d.is_empty() && *d != "-").map(|d| format!(" {d}")).unwrap_or_default();
            Some((t, lane, format!("{}{dev}", h.hook.as_deref().unwrap_or("?"))))
        })
        .collect();
    let tmax = points.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let lanes_n = i32::try_from(lanes.len()).ok()?;
    let height = 120 + 70 * u32::try_from(lanes.len()).ok()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, height)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let lane_label = |y: &i32| usize::try_from(*y).ok().and_then(|i| lanes.get(i)).map(|ns| format!("netns {ns}")).unwrap_or_default();
        let mut chart = ChartBuilder::on(&root)
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(130)
            .build_cartesian_2d(-tmax * 0.02..tmax * 1.25, -1i32..lanes_n)
            .ok()?;
        chart
            .configure_mesh()
            .y_labels(lanes.len() + 2)
            .y_label_formatter(&lane_label)
            .x_desc("µs since the first hop")
            .light_line_style(TRANSPARENT)
            .draw()
            .ok()?;
        chart.draw_series(LineSeries::new(points.iter().map(|(t, l, _)| (*t, *l)), RGBColor(0x1f, 0x77, 0xb4).stroke_width(2))).ok()?;
        chart.draw_series(points.iter().map(|(t, l, _)| Circle::new((*t, *l), 4, RGBColor(0x1f, 0x77, 0xb4).filled()))).ok()?;
        let style = TextStyle::from(("sans-serif", 11).into_font()).color(&BLACK);
        chart
            .draw_series(points.iter().enumerate().map(|(i, (t, l, text))| {
                // Alternate above and below the lane so neighbouring hooks stay readable.
                let dy = if i % 2 == 0 { -18 } else { 8 };
                EmptyElement::at((*t, *l)) + Text::new(text.clone(), (4, dy), style.clone())
            }))
            .ok()?;
        root.present().ok()?;
    }
    Some(inline(&svg))
}
