//! Pictures of a run, as PNG files drawn with plotters: the learning curves (loss and accuracy per
//! epoch, training vs validation) and the test confusion matrix as a labelled heat map.
//!
//! Text needs a TrueType font. plotters is built without system font lookup (no fontconfig), so the
//! font file is read once from `$MNIST_TCH_FONT` or the usual DejaVu Sans locations
//! (Debian's fonts-dejavu-core, installed by scripts/setup.sh).

use crate::evaluation::Evaluation;
use crate::run_dir::{RunConfig, write_atomically};
use crate::training::EpochMetrics;
use anyhow::{Context, Result, anyhow, bail};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const CURVES_FILE: &str = "learning_curves.png";
pub const CONFUSION_FILE: &str = "confusion_matrix.png";
pub const CURVES_SIZE: (u32, u32) = (1200, 500);
pub const CONFUSION_SIZE: (u32, u32) = (900, 800);

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers the font under "sans-serif" once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let candidates: Vec<PathBuf> = std::env::var_os("MNIST_TCH_FONT")
                .map(PathBuf::from)
                .into_iter()
                .chain(FONT_CANDIDATES.iter().map(PathBuf::from))
                .collect();
            let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
                "no TrueType font found for the plots: install fonts-dejavu-core (scripts/setup.sh does) or set \
                 MNIST_TCH_FONT to a .ttf file"
                    .to_string()
            })?;
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{}: not a usable TrueType font", path.display()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn drawing_error<E: std::fmt::Debug>(path: &Path) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow!("{}: drawing failed: {e:?}", path.display())
}

/// Draws loss and accuracy per epoch, training vs validation, side by side.
pub fn learning_curves(history: &[EpochMetrics], run_name: &str, path: &Path) -> Result<()> {
    ensure_font()?;
    if history.is_empty() {
        bail!("{}: no completed epoch to plot", path.display());
    }
    let root = BitMapBackend::new(path, CURVES_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(drawing_error(path))?;
    let root =
        root.titled(&format!("Learning curves - {run_name}"), ("sans-serif", 28)).map_err(drawing_error(path))?;
    let (left, right) = root.split_horizontally(CURVES_SIZE.0 / 2);
    let epochs = history.len() as f64;
    let x_range = 0.5..(history.last().map_or(1.0, |m| m.epoch as f64) + 0.5).max(epochs + 0.5);
    let panels: [(&str, fn(&EpochMetrics) -> f64, fn(&EpochMetrics) -> f64, _); 2] =
        [("loss", |m| m.loss, |m| m.val_loss, left), ("accuracy", |m| m.accuracy, |m| m.val_accuracy, right)];
    for (name, train, valid, area) in panels {
        let values: Vec<f64> = history.iter().flat_map(|m| [train(m), valid(m)]).filter(|v| v.is_finite()).collect();
        let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let mut chart = ChartBuilder::on(&area)
            .caption(name, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(x_range.clone(), (lo - pad)..(hi + pad))
            .map_err(drawing_error(path))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(name)
            .x_labels(history.len().min(12))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.3}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(drawing_error(path))?;
        for (label, metric, color) in [("training", train, BLUE), ("validation", valid, RED)] {
            let points: Vec<(f64, f64)> = history.iter().map(|m| (m.epoch as f64, metric(m))).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(drawing_error(path))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))
                .map_err(drawing_error(path))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(drawing_error(path))?;
    }
    root.present().map_err(drawing_error(path)).with_context(|| format!("writing {}", path.display()))
}

/// Draws the confusion matrix (rows: true class, columns: predicted class) as a heat map with the
/// counts in the cells and the class names on the axes.
pub fn confusion_matrix(confusion: &[Vec<i64>], class_names: &[String], run_name: &str, path: &Path) -> Result<()> {
    ensure_font()?;
    let k = confusion.len();
    if k == 0 || class_names.len() != k {
        bail!("{}: {} class names for a {k}x{k} confusion matrix", path.display(), class_names.len());
    }
    let root = BitMapBackend::new(path, CONFUSION_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(drawing_error(path))?;
    let longest = class_names.iter().map(|n| n.len()).max().unwrap_or(1) as u32;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Test confusion matrix - {run_name}"), ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(60 + 7 * longest)
        .y_label_area_size(40 + 8 * longest)
        .build_cartesian_2d(0i32..k as i32, 0i32..k as i32)
        .map_err(drawing_error(path))?;
    // Row 0 at the top, like a printed matrix.
    let name_of = |i: i32| class_names.get(i as usize).cloned().unwrap_or_default();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(1)
        .x_label_formatter(&|_| String::new())
        .y_labels(k)
        .y_label_offset(-20)
        .y_label_formatter(&|y| name_of(k as i32 - 1 - *y))
        .y_label_style(("sans-serif", 14))
        .x_desc("predicted class")
        .y_desc("true class")
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(drawing_error(path))?;
    // Column names written downwards under each column (plotters' own rotated tick labels clip).
    let area = chart.plotting_area();
    let centred_left = plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Left,
        plotters::style::text_anchor::VPos::Center,
    );
    for column in 0..k as i32 {
        let (x0, bottom) = area.map_coordinate(&(column, 0));
        let (x1, _) = area.map_coordinate(&(column + 1, 0));
        let style = ("sans-serif", 14).into_font().transform(FontTransform::Rotate90).color(&BLACK).pos(centred_left);
        root.draw(&Text::new(name_of(column), ((x0 + x1) / 2, bottom + 8), style)).map_err(drawing_error(path))?;
    }
    let row_totals: Vec<i64> = confusion.iter().map(|r| r.iter().sum::<i64>().max(1)).collect();
    let cells =
        confusion.iter().enumerate().flat_map(|(t, row)| row.iter().enumerate().map(move |(p, &count)| (t, p, count)));
    for (t, p, count) in cells {
        // Shade by the share of the true class's examples, so rare classes are as visible.
        let share = count as f64 / row_totals[t] as f64;
        let y = (k - 1 - t) as i32;
        let x = p as i32;
        let shade = (255.0 * (1.0 - share)) as u8;
        let color = RGBColor(shade, shade, 255);
        chart
            .draw_series(std::iter::once(Rectangle::new([(x, y), (x + 1, y + 1)], color.filled())))
            .map_err(drawing_error(path))?;
        let text_color = if share > 0.5 { WHITE } else { BLACK };
        let style = ("sans-serif", 15).into_font().color(&text_color).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Center,
        ));
        let area = chart.plotting_area();
        let (px0, py0) = area.map_coordinate(&(x, y + 1));
        let (px1, py1) = area.map_coordinate(&(x + 1, y));
        root.draw(&Text::new(count.to_string(), ((px0 + px1) / 2, (py0 + py1) / 2), style))
            .map_err(drawing_error(path))?;
    }
    root.present().map_err(drawing_error(path)).with_context(|| format!("writing {}", path.display()))
}

/// Draws the learning curves and, when a test evaluation is known, the confusion matrix into the run
/// directory `out`.
pub fn draw_plots(
    out: &Path,
    config: &RunConfig,
    history: &[EpochMetrics],
    test: Option<&Evaluation>,
) -> Result<Vec<PathBuf>> {
    let name = out.file_name().map_or_else(|| out.display().to_string(), |n| n.to_string_lossy().into_owned());
    let curves = out.join(CURVES_FILE);
    write_atomically(&curves, |tmp| learning_curves(history, &name, tmp))?;
    let mut written = vec![curves];
    if let Some(test) = test {
        let confusion = out.join(CONFUSION_FILE);
        write_atomically(&confusion, |tmp| confusion_matrix(&test.confusion, &config.data.class_names, &name, tmp))?;
        written.push(confusion);
    }
    Ok(written)
}
