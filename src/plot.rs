//! Pictures of a run, as PNG files drawn with plotters: the learning curves (loss and accuracy per
//! epoch, training vs validation, and the epoch that early stopping restored) and the test confusion
//! matrix as a labelled heat map. `train --plot` and `mnist-tch plot` both draw through
//! [`draw_run_plots`], so the two give the same pictures.
//!
//! The curves' legend sits in its own strip under the title, never over the data; the confusion
//! matrix's class names are drawn at the middle of their row and column.
//!
//! Text needs a TrueType font. plotters is built without system font lookup (no fontconfig), so the
//! font file is read once from `$MNIST_TCH_FONT` or the usual DejaVu Sans locations
//! (Debian's fonts-dejavu-core, installed by scripts/setup.sh).

use crate::evaluation::Evaluation;
use crate::files::write_atomically;
use crate::run_dir::{CONFUSION_FILE, CURVES_FILE, EpochMetrics, RunConfig};
use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::types::RangedCoordi32;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One number of an epoch's metrics (the loss, the validation accuracy, ...).
type Metric = fn(&EpochMetrics) -> f64;

pub const CURVES_SIZE: (u32, u32) = (1200, 540);
pub const CONFUSION_SIZE: (u32, u32) = (900, 800);

/// The series' colours: training, validation, and the restored epoch's marker.
pub const TRAINING_COLOR: RGBColor = RGBColor(31, 119, 180);
pub const VALIDATION_COLOR: RGBColor = RGBColor(214, 39, 40);
pub const RESTORED_COLOR: RGBColor = RGBColor(44, 160, 44);

/// Height of the legend strip between the title and the two panels.
const LEGEND_HEIGHT: u32 = 36;

/// Draws the learning curves and, when a test evaluation is known, the confusion matrix into the run
/// directory `out`, each file written atomically; returns the files written.
pub fn draw_run_plots(
    out: &Path,
    config: &RunConfig,
    history: &[EpochMetrics],
    test: Option<&Evaluation>,
) -> Result<Vec<PathBuf>> {
    let name = out.file_name().map_or_else(|| out.display().to_string(), |n| n.to_string_lossy().into_owned());
    draw_run_plots_into(out, &name, config, history, test)
}

/// [`draw_run_plots`] into the directory `out`, with the run called `name` in the titles.
pub fn draw_run_plots_into(
    out: &Path,
    name: &str,
    config: &RunConfig,
    history: &[EpochMetrics],
    test: Option<&Evaluation>,
) -> Result<Vec<PathBuf>> {
    let curves = out.join(CURVES_FILE);
    let restored = config.restored_epoch().map(|epoch| (epoch, config.training.monitor.name()));
    write_atomically(&curves, |tmp| learning_curves(history, name, restored, tmp))?;
    let mut written = vec![curves];
    if let Some(test) = test {
        let confusion = out.join(CONFUSION_FILE);
        write_atomically(&confusion, |tmp| confusion_matrix(&test.confusion, &config.data.class_names, name, tmp))?;
        written.push(confusion);
    }
    Ok(written)
}

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

/// Draws loss and accuracy per epoch, training vs validation, side by side, with the legend in a strip
/// of its own. `restored` (epoch, monitored metric) marks the epoch early stopping restored.
pub fn learning_curves(
    history: &[EpochMetrics],
    run_name: &str,
    restored: Option<(usize, &str)>,
    path: &Path,
) -> Result<()> {
    ensure_font()?;
    if history.is_empty() {
        bail!("{}: no completed epoch to plot", path.display());
    }
    let root = BitMapBackend::new(path, CURVES_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(drawing_error(path))?;
    let root =
        root.titled(&format!("Learning curves - {run_name}"), ("sans-serif", 28)).map_err(drawing_error(path))?;
    let (legend, panels_area) = root.split_vertically(LEGEND_HEIGHT);
    draw_legend(&legend, &curves_legend(restored)).map_err(drawing_error(path))?;
    let (left, right) = panels_area.split_horizontally(CURVES_SIZE.0 / 2);
    let loss = Panel { name: "loss", train: |m| m.loss, valid: |m| m.val_loss };
    let accuracy = Panel { name: "accuracy", train: |m| m.accuracy, valid: |m| m.val_accuracy };
    for (panel, area) in [(loss, left), (accuracy, right)] {
        draw_panel(&area, &panel, history, restored.map(|(epoch, _)| epoch)).map_err(drawing_error(path))?;
    }
    root.present().map_err(drawing_error(path)).with_context(|| format!("writing {}", path.display()))
}

/// The curves' legend: the two series and, when early stopping restored an epoch, its marker.
fn curves_legend(restored: Option<(usize, &str)>) -> Vec<LegendEntry> {
    let mut entries = vec![
        LegendEntry { color: TRAINING_COLOR, text: "training".into(), vertical: false },
        LegendEntry { color: VALIDATION_COLOR, text: "validation".into(), vertical: false },
    ];
    if let Some((epoch, monitor)) = restored {
        let text = format!("epoch {epoch} restored by early stopping (best {monitor})");
        entries.push(LegendEntry { color: RESTORED_COLOR, text, vertical: true });
    }
    entries
}

/// One panel of the learning curves: a metric, training vs validation.
struct Panel {
    name: &'static str,
    train: Metric,
    valid: Metric,
}

/// Draws `panel`'s two series per epoch into `area`, over a dashed marker at the `restored` epoch.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    history: &[EpochMetrics],
    restored: Option<usize>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let epochs = history.len() as f64;
    let x_range = 0.5..(history.last().map_or(1.0, |m| m.epoch as f64) + 0.5).max(epochs + 0.5);
    let y_range = value_range(history, panel);
    let mut chart = ChartBuilder::on(area)
        .caption(panel.name, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x_range, y_range.clone())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(panel.name)
        .x_labels(history.len().min(12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.3}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    if let Some(epoch) = restored {
        // Under the curves, so it never hides a point.
        let x = epoch as f64;
        let marker = [(x, y_range.start), (x, y_range.end)];
        chart.draw_series(DashedLineSeries::new(marker, 8, 5, RESTORED_COLOR.stroke_width(3)))?;
    }
    for (metric, color) in [(panel.train, TRAINING_COLOR), (panel.valid, VALIDATION_COLOR)] {
        let points: Vec<(f64, f64)> = history.iter().map(|m| (m.epoch as f64, metric(m))).collect();
        chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    Ok(())
}

/// The y axis of `panel`: its finite values, with a tenth of their spread (at least 0.001) either side.
fn value_range(history: &[EpochMetrics], panel: &Panel) -> Range<f64> {
    let values = history.iter().flat_map(|m| [(panel.train)(m), (panel.valid)(m)]).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.1).max(1e-3);
    (lo - pad)..(hi + pad)
}

/// A legend entry: a sample of the series (a line with a dot, or a vertical marker) and its label.
struct LegendEntry {
    color: RGBColor,
    text: String,
    vertical: bool,
}

/// One row of legend entries, centred in `area`.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    const SAMPLE: i32 = 30;
    const GAP: i32 = 8;
    const SPACING: i32 = 36;
    let font = ("sans-serif", 17).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    let widths: Vec<i32> = entries
        .iter()
        .map(|entry| area.estimate_text_size(&entry.text, &font).map(|(w, _)| w as i32))
        .collect::<Result<_, _>>()?;
    let total: i32 = widths.iter().map(|w| SAMPLE + GAP + w).sum::<i32>() + SPACING * (entries.len() as i32 - 1);
    let (width, height) = area.dim_in_pixel();
    let y = height as i32 / 2;
    let mut x = (width as i32 - total).max(0) / 2;
    for (entry, text_width) in entries.iter().zip(widths) {
        let middle = x + SAMPLE / 2;
        if entry.vertical {
            area.draw(&PathElement::new(vec![(middle, y - 10), (middle, y + 10)], entry.color.stroke_width(3)))?;
        } else {
            area.draw(&PathElement::new(vec![(x, y), (x + SAMPLE, y)], entry.color.stroke_width(3)))?;
            area.draw(&Circle::new((middle, y), 4, entry.color.filled()))?;
        }
        area.draw(&Text::new(entry.text.as_str(), (x + SAMPLE + GAP, y), font.clone()))?;
        x += SAMPLE + GAP + text_width + SPACING;
    }
    Ok(())
}

/// Class names up to this many characters are written upright under their column.
const SHORT_NAME: u32 = 3;

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
    let mut chart = confusion_chart(&root, class_names, run_name).map_err(drawing_error(path))?;
    draw_class_names(&root, chart.plotting_area(), class_names).map_err(drawing_error(path))?;
    draw_cells(&root, &mut chart, confusion).map_err(drawing_error(path))?;
    root.present().map_err(drawing_error(path)).with_context(|| format!("writing {}", path.display()))
}

/// The confusion matrix's cells: column `p`, row `y` is the square `(p, y)..(p + 1, y + 1)`.
type Cells = Cartesian2d<RangedCoordi32, RangedCoordi32>;

/// Length of the longest class name, which sizes the label areas.
fn longest_name(class_names: &[String]) -> u32 {
    class_names.iter().map(|n| n.len()).max().unwrap_or(1) as u32
}

/// The titled chart of `class_names.len()` square cells, its axes described but unlabelled (the class
/// names are drawn by [`draw_class_names`]).
fn confusion_chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    class_names: &[String],
    run_name: &str,
) -> Result<ChartContext<'a, DB, Cells>, DrawingAreaErrorKind<DB::ErrorType>> {
    let k = class_names.len() as i32;
    let longest = longest_name(class_names);
    let mut chart = ChartBuilder::on(root)
        .caption(format!("Test confusion matrix - {run_name} (shade: log scale)"), ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(60 + 7 * longest)
        .y_label_area_size(40 + 8 * longest)
        .build_cartesian_2d(0i32..k, 0i32..k)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(1)
        .x_label_formatter(&|_| String::new())
        .y_labels(1)
        .y_label_formatter(&|_| String::new())
        .x_desc("predicted class")
        .y_desc("true class")
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    Ok(chart)
}

/// The class names at the middle of each row and column of `area`: plotters puts tick labels on the
/// cell boundaries (and its rotated ones clip). Row 0 is at the top, like a printed matrix.
fn draw_class_names<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Cells>,
    class_names: &[String],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let k = class_names.len() as i32;
    let longest = longest_name(class_names);
    let name_of = |i: i32| class_names.get(i as usize).cloned().unwrap_or_default();
    for index in 0..k {
        // Column `index`, left to right: its name under it, upright when short (digits), else written
        // downwards.
        let (x0, bottom) = area.map_coordinate(&(index, 0));
        let (x1, _) = area.map_coordinate(&(index + 1, 0));
        let style = if longest <= SHORT_NAME {
            ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top))
        } else {
            ("sans-serif", 14)
                .into_font()
                .transform(FontTransform::Rotate90)
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center))
        };
        root.draw(&Text::new(name_of(index), ((x0 + x1) / 2, bottom + 8), style))?;
        // Row `index`, top to bottom (y = k - 1 - index): its name right-aligned left of it.
        let y = k - 1 - index;
        let (left, top) = area.map_coordinate(&(0, y + 1));
        let (_, bottom) = area.map_coordinate(&(0, y));
        let style = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(name_of(index), (left - 8, (top + bottom) / 2), style))?;
    }
    Ok(())
}

/// Each cell of the matrix: shaded by its count, the count written in it.
fn draw_cells<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut ChartContext<DB, Cells>,
    confusion: &[Vec<i64>],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let k = confusion.len();
    let row_totals: Vec<i64> = confusion.iter().map(|r| r.iter().sum::<i64>().max(1)).collect();
    let cells =
        confusion.iter().enumerate().flat_map(|(t, row)| row.iter().enumerate().map(move |(p, &count)| (t, p, count)));
    for (t, p, count) in cells {
        // Shade by the share of the true class's examples on a log scale, so rare classes are as visible
        // and a few confusions stand out from zero (a linear scale leaves them white beside the diagonal).
        let share = (1.0 + count as f64).ln() / (1.0 + row_totals[t] as f64).ln();
        let y = (k - 1 - t) as i32;
        let x = p as i32;
        let shade = (255.0 * (1.0 - share)) as u8;
        let color = RGBColor(shade, shade, 255);
        chart.draw_series(std::iter::once(Rectangle::new([(x, y), (x + 1, y + 1)], color.filled())))?;
        let text_color = if share > 0.5 { WHITE } else { BLACK };
        let style = ("sans-serif", 15).into_font().color(&text_color).pos(Pos::new(HPos::Center, VPos::Center));
        let area = chart.plotting_area();
        let (px0, py0) = area.map_coordinate(&(x, y + 1));
        let (px1, py1) = area.map_coordinate(&(x + 1, y));
        root.draw(&Text::new(count.to_string(), ((px0 + px1) / 2, (py0 + py1) / 2), style))?;
    }
    Ok(())
}
