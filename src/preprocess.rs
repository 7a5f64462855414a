//! Turning an arbitrary picture into what the network was trained on: a small grayscale image, white
//! ink on black, pixels in [0, 1], the content fitted the way the data set was made.
//!
//! - Digit MNIST: the digit's bounding box is scaled to fit a 20×20 box (aspect kept, anti-aliased)
//!   and placed in the 28×28 frame so that its centre of mass is at the centre.
//! - Fashion-MNIST: the object's bounding box is scaled so its longer side fills the frame, and centred.
//!
//! - A picture that already has that layout — the frame's size on a dark background (an MNIST or
//!   Fashion-MNIST image saved as PNG) — is used as it is: cropping and re-centring it again would only
//!   move it away from what the network was trained on.
//!
//! Sizes scale with the model's input shape (20/28 of it for the digit box).

use anyhow::{Context, Result, bail};
use image::{GrayImage, Luma, imageops};
use std::path::Path;

/// How a picture's content is placed in the model's frame (`--fit`), each way described in [`Framing::HELP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    #[default]
    Auto,
    Digits,
    Fashion,
    AsIs,
}

crate::spelling::named_values!(Framing, "framing", {
    Auto => "auto": "As it is when the picture already has the data set's layout (the model's size on a dark \
        background; for digits a wholly dark border and the content centred); otherwise fashion for a \
        Fashion-MNIST model, else digits",
    Digits => "digits": "Crop to the content, scale it into a 20x20 box, centre it by centre of mass (as digit \
        MNIST was made)",
    Fashion => "fashion": "Crop to the content, scale its longer side to the frame, centre it (as Fashion-MNIST \
        was made)",
    AsIs => "none": "The pixels as they are: only grayscale, --invert and a resize when the size differs",
});

// Recorded in a run's config.json (`data.fit`) by its name.
impl serde::Serialize for Framing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Framing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether to turn dark-on-light pictures into light-on-dark, each choice described in [`Invert::HELP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invert {
    Auto,
    Yes,
    No,
}

crate::spelling::named_values!(Invert, "inversion", {
    Auto => "auto": "Invert when the picture's border is mostly light (a dark drawing on paper)",
    Yes => "yes": "Always invert: dark ink on a light background becomes light on dark",
    No => "no": "Never invert: the picture is already light on dark, as MNIST",
});

/// The network's input for one picture and what was done to get it.
pub struct ModelInput {
    /// `rows × cols` pixels in [0, 1], row-major.
    pub pixels: Vec<f32>,
    pub image: GrayImage,
    pub inverted: bool,
    /// The framing applied (never `Auto`).
    pub framing: Framing,
    /// Why the prediction may mean little (content too small to be a digit).
    pub warning: Option<String>,
}

/// Decodes `path` (PNG, JPEG, BMP, GIF, TIFF, WebP, PNM) to grayscale, as [`decode_gray`] does.
pub fn load_gray(path: &Path) -> Result<GrayImage> {
    let bytes = std::fs::read(path)
        .map_err(|err| anyhow::anyhow!("{}: cannot open: {}", path.display(), crate::error_text::io_reason(&err)))?;
    decode_gray(&bytes).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

/// Decodes a picture held in memory (an uploaded file) to grayscale, turned upright as a JPEG's EXIF
/// orientation says ([`crate::orientation`]) and transparency counted as paper ([`flatten_alpha`]): the one
/// decoder behind both `predict` and `serve`, so they see the same pixels.
pub fn decode_gray(bytes: &[u8]) -> Result<GrayImage> {
    if bytes.is_empty() {
        bail!("empty file: 0 bytes, no picture in it");
    }
    let reader = image::io::Reader::new(std::io::Cursor::new(bytes)).with_guessed_format().context("cannot read")?;
    let mut decoded = reader.decode().map_err(|e| anyhow::anyhow!("not a readable image: {e}"))?;
    if let Some(value) = crate::orientation::jpeg_orientation(bytes) {
        decoded = crate::orientation::apply(decoded, value);
    }
    Ok(flatten_alpha(&decoded))
}

/// Grayscale, with transparency counted as paper: a transparent pixel becomes the colour that contrasts
/// with the ink (white under dark ink, black under light ink), a half-transparent one is blended with it.
/// Black ink on a transparent background (an HTML canvas, many paint programs) is then black on white.
/// The ink's colour is the alpha-weighted mean of the visible pixels.
pub fn flatten_alpha(decoded: &image::DynamicImage) -> GrayImage {
    if !decoded.color().has_alpha() {
        return decoded.to_luma8();
    }
    let with_alpha = decoded.to_luma_alpha8();
    let (mut sum, mut weight) = (0.0f64, 0.0f64);
    for p in with_alpha.pixels() {
        let alpha = p[1] as f64 / 255.0;
        sum += p[0] as f64 * alpha;
        weight += alpha;
    }
    let ink = if weight > 0.0 { sum / weight } else { 0.0 };
    let paper = if ink < 128.0 { 255.0 } else { 0.0 };
    GrayImage::from_fn(with_alpha.width(), with_alpha.height(), |x, y| {
        let p = with_alpha.get_pixel(x, y);
        let alpha = p[1] as f64 / 255.0;
        Luma([(p[0] as f64 * alpha + paper * (1.0 - alpha)).round() as u8])
    })
}

/// A picture as the input of a model of `rows × cols` images with these classes: `framing` resolved for
/// the picture and the model's data set ([`resolve_framing`]), then [`fit_into_frame`]. What `predict` does with
/// a file and `serve` with an upload, so both see the same pixels.
pub fn to_model_input(
    image: &GrayImage,
    rows: u32,
    cols: u32,
    class_names: &[String],
    framing: Framing,
    invert: Invert,
) -> Result<ModelInput> {
    let framing = resolve_framing(framing, image, invert, rows, cols, dataset_framing(class_names));
    fit_into_frame(image, rows, cols, framing, invert)
}

/// The framing `Framing::Auto` falls back to for a model with these classes: fashion for Fashion-MNIST's, else
/// digits.
fn dataset_framing(class_names: &[String]) -> Framing {
    if class_names.iter().map(String::as_str).eq(crate::class_names::FASHION_CLASSES) {
        Framing::Fashion
    } else {
        Framing::Digits
    }
}

/// Mean brightness of the outermost pixels: high for a drawing on paper.
fn border_mean(image: &GrayImage) -> f64 {
    let (w, h) = image.dimensions();
    let mut sum = 0u64;
    let mut count = 0u64;
    for (x, y, p) in image.enumerate_pixels() {
        if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
            sum += p[0] as u64;
            count += 1;
        }
    }
    sum as f64 / count.max(1) as f64
}

/// Whether `invert` turns this picture over: `auto` when its border is mostly light.
fn decide_invert(image: &GrayImage, invert: Invert) -> bool {
    match invert {
        Invert::Yes => true,
        Invert::No => false,
        Invert::Auto => border_mean(image) > 127.0,
    }
}

/// Brightest a border pixel of a digit picture in MNIST's layout may be, and the brightest the border of
/// a Fashion-MNIST picture may be on average (out of 255; 99% of Fashion-MNIST's test images are below).
const DARK_BORDER: u8 = 40;

/// Whether `ink` (white on black already) looks like an image of the data set `dataset_framing` stands for:
/// `rows × cols`, some content, and
/// - digits: every outermost pixel dark, the content's centre of mass within a seventh of the frame of
///   the centre (MNIST centres it exactly);
/// - fashion: the outermost pixels dark on average (Fashion-MNIST's items fill the frame and touch it).
fn has_frame_layout(ink: &GrayImage, rows: u32, cols: u32, dataset_framing: Framing) -> bool {
    let (w, h) = ink.dimensions();
    if (w, h) != (cols, rows) || !ink.pixels().any(|p| p[0] > DARK_BORDER + 30) {
        return false;
    }
    if dataset_framing == Framing::Fashion {
        return border_mean(ink) <= DARK_BORDER as f64;
    }
    let border_dark =
        ink.enumerate_pixels().all(|(x, y, p)| !(x == 0 || y == 0 || x == w - 1 || y == h - 1) || p[0] <= DARK_BORDER);
    let centred = centre_of_mass(ink).is_some_and(|(cx, cy)| {
        (cx - w as f64 / 2.0).abs() <= w as f64 / 7.0 && (cy - h as f64 / 2.0).abs() <= h as f64 / 7.0
    });
    border_dark && centred
}

/// A picture as the input of a model taking `rows × cols` images: inverted when needed, its content
/// fitted into the frame. `Framing::Auto` uses the picture as it is when it already has the frame's
/// layout, else the digits framing; callers that know the model's data set resolve it first with
/// [`resolve_framing`].
pub fn fit_into_frame(image: &GrayImage, rows: u32, cols: u32, framing: Framing, invert: Invert) -> Result<ModelInput> {
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 {
        bail!("the image is empty");
    }
    let framing = resolve_framing(framing, image, invert, rows, cols, Framing::Digits);
    let inverted = decide_invert(image, invert);
    let mut ink = image.clone();
    if inverted {
        imageops::invert(&mut ink);
    }
    if framing == Framing::AsIs {
        let frame = if (w, h) == (cols, rows) {
            ink
        } else {
            imageops::resize(&ink, cols, rows, imageops::FilterType::Triangle)
        };
        return Ok(ModelInput { pixels: unit_pixels(&frame), image: frame, inverted, framing, warning: None });
    }
    let content = crop_to_content(ink)?;
    let (cw, ch) = content.dimensions();
    let scaled = scale_into_box(&content, rows, cols, framing);
    let warning = too_small(w, h, cw, ch);
    let frame = place_in_frame(&scaled, rows, cols, framing);
    Ok(ModelInput { pixels: unit_pixels(&frame), image: frame, inverted, framing, warning })
}

/// The pixels as the network's input: row-major, in [0, 1].
fn unit_pixels(frame: &GrayImage) -> Vec<f32> {
    frame.pixels().map(|p| p[0] as f32 / 255.0).collect()
}

/// The content of `ink` (light on dark): the bounding box of the digit's pixels clearly above the
/// background ([`digit_box`]: specks far from the ink's mass left out), with the background taken down to
/// black, so the scaled content sits on the zero background the network knows.
fn crop_to_content(mut ink: GrayImage) -> Result<GrayImage> {
    let background = border_mean(&ink);
    let threshold = (background + 30.0).min(250.0) as u8;
    let Some(Bounds { x0, y0, x1, y1 }) = digit_box(&ink_components(&ink, threshold)) else {
        bail!("the image is blank: no content stands out from its background");
    };
    let floor = background.round() as u8;
    for p in ink.pixels_mut() {
        p[0] = p[0].saturating_sub(floor);
    }
    Ok(imageops::crop_imm(&ink, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image())
}

/// An inclusive pixel rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

impl Bounds {
    fn union(self, other: Bounds) -> Bounds {
        Bounds {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }

    /// The gap between two rectangles along the axis where they are farther apart (0 when they touch).
    fn gap(self, other: Bounds) -> u32 {
        let dx = other.x0.saturating_sub(self.x1).max(self.x0.saturating_sub(other.x1));
        let dy = other.y0.saturating_sub(self.y1).max(self.y0.saturating_sub(other.y1));
        dx.max(dy)
    }

    fn longer_side(self) -> u32 {
        (self.x1 - self.x0 + 1).max(self.y1 - self.y0 + 1)
    }
}

/// A connected group of ink pixels (8-neighbours): how many and their bounding box.
#[derive(Debug, Clone, Copy)]
struct Component {
    pixels: u64,
    bounds: Bounds,
}

/// The connected groups of pixels brighter than `threshold`.
fn ink_components(ink: &GrayImage, threshold: u8) -> Vec<Component> {
    let (w, h) = ink.dimensions();
    let is_ink: Vec<bool> = ink.pixels().map(|p| p[0] > threshold).collect();
    let mut seen = vec![false; is_ink.len()];
    let mut components = Vec::new();
    let mut stack = Vec::new();
    for start in 0..is_ink.len() {
        if !is_ink[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (x, y) = ((start % w as usize) as u32, (start / w as usize) as u32);
        let mut component = Component { pixels: 0, bounds: Bounds { x0: x, y0: y, x1: x, y1: y } };
        while let Some(at) = stack.pop() {
            let (x, y) = ((at % w as usize) as u32, (at / w as usize) as u32);
            component.pixels += 1;
            component.bounds = component.bounds.union(Bounds { x0: x, y0: y, x1: x, y1: y });
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let next = ny as usize * w as usize + nx as usize;
                    if is_ink[next] && !seen[next] {
                        seen[next] = true;
                        stack.push(next);
                    }
                }
            }
        }
        components.push(component);
    }
    components
}

/// A group with under this share of the largest group's pixels is small...
const SPECK_SHARE: f64 = 0.1;
/// ...and a speck when it is also farther from the digit's box than this share of the box's longer side.
const SPECK_DISTANCE: f64 = 0.25;

/// The bounding box of the digit: every group of ink pixels except specks — groups with under
/// [`SPECK_SHARE`] of the largest group's pixels lying farther than [`SPECK_DISTANCE`] of the box's longer
/// side from the box of the large groups. A speck of dust in a scan's corner is left out; the dot of an
/// "i", a separate top bar of a "5" or a broken stroke, near the rest, is kept. `None` without ink.
fn digit_box(components: &[Component]) -> Option<Bounds> {
    let largest = components.iter().map(|c| c.pixels).max()?;
    let is_large = |c: &&Component| c.pixels as f64 >= SPECK_SHARE * largest as f64;
    let main = components.iter().filter(is_large).map(|c| c.bounds).reduce(Bounds::union)?;
    let reach = SPECK_DISTANCE * main.longer_side() as f64;
    components
        .iter()
        .filter(|c| is_large(c) || main.gap(c.bounds) as f64 <= reach)
        .map(|c| c.bounds)
        .reduce(Bounds::union)
}

/// `content` scaled, aspect kept, so its longer side fills the box of `framing`: the whole frame
/// (fashion) or 20/28 of it (digits); its ink at full brightness.
fn scale_into_box(content: &GrayImage, rows: u32, cols: u32, framing: Framing) -> GrayImage {
    let (cw, ch) = content.dimensions();
    let box_size = match framing {
        Framing::Fashion => rows.min(cols),
        _ => ((rows.min(cols) as f64) * 20.0 / 28.0).round() as u32,
    };
    let scale = box_size as f64 / cw.max(ch) as f64;
    let (sw, sh) = (((cw as f64 * scale).round() as u32).max(1), ((ch as f64 * scale).round() as u32).max(1));
    let mut scaled = imageops::resize(content, sw, sh, imageops::FilterType::Triangle);
    // A thin pen on a large canvas comes out faint once scaled down (a 3 px stroke on 1000 px is a tenth
    // of a pixel in the 20-pixel box): the ink is stretched back to full brightness, as MNIST's strokes are.
    stretch_contrast(&mut scaled);
    scaled
}

/// A black `rows × cols` frame with `scaled` in it: its centre of mass (digits) or bounding-box centre
/// (fashion) at the frame's centre.
fn place_in_frame(scaled: &GrayImage, rows: u32, cols: u32, framing: Framing) -> GrayImage {
    let (sw, sh) = scaled.dimensions();
    let (cx, cy) = match framing {
        Framing::Fashion => (sw as f64 / 2.0, sh as f64 / 2.0),
        _ => centre_of_mass(scaled).unwrap_or((sw as f64 / 2.0, sh as f64 / 2.0)),
    };
    let offset_x = (cols as f64 / 2.0 - cx).round() as i64;
    let offset_y = (rows as f64 / 2.0 - cy).round() as i64;
    let mut frame = GrayImage::from_pixel(cols, rows, Luma([0]));
    imageops::overlay(&mut frame, scaled, offset_x, offset_y);
    frame
}

/// Scales the pixels so the brightest is 255 (nothing to do for a black image).
fn stretch_contrast(image: &mut GrayImage) {
    let peak = image.pixels().map(|p| p[0]).max().unwrap_or(0);
    if peak == 0 || peak == 255 {
        return;
    }
    for p in image.pixels_mut() {
        p[0] = ((p[0] as f64 * 255.0 / peak as f64).round() as u32).min(255) as u8;
    }
}

/// Content whose longer side is under this share of the picture's shorter side (or under
/// [`MIN_CONTENT_PIXELS`]) is a dot or a speck, not a digit.
const MIN_CONTENT_SHARE: f64 = 0.05;
const MIN_CONTENT_PIXELS: u32 = 4;

/// A warning when the content (`cw × ch` of a `w × h` picture) is too small to be a digit.
fn too_small(w: u32, h: u32, cw: u32, ch: u32) -> Option<String> {
    let longer = cw.max(ch);
    let small = (longer as f64) < MIN_CONTENT_SHARE * w.min(h) as f64 || longer < MIN_CONTENT_PIXELS;
    small.then(|| {
        format!(
            "the content is only {cw}x{ch} pixels of a {w}x{h} picture: too small to be a digit or an item, the \
             prediction means little"
        )
    })
}

/// The framing `requested` stands for with this picture: `Auto` is as it is when the picture (inverted as
/// `invert` says) already has the layout of the data set `dataset_framing` stands for, else `dataset_framing`;
/// any other framing is itself.
pub fn resolve_framing(
    requested: Framing,
    image: &GrayImage,
    invert: Invert,
    rows: u32,
    cols: u32,
    dataset_framing: Framing,
) -> Framing {
    if requested != Framing::Auto {
        return requested;
    }
    if image.dimensions() == (cols, rows) {
        let mut ink = image.clone();
        if decide_invert(image, invert) {
            imageops::invert(&mut ink);
        }
        if has_frame_layout(&ink, rows, cols, dataset_framing) {
            return Framing::AsIs;
        }
    }
    dataset_framing
}

/// Intensity-weighted centre `(x, y)` in pixel units (pixel centres at +0.5); `None` for a black image.
pub fn centre_of_mass(image: &GrayImage) -> Option<(f64, f64)> {
    let (mut total, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (x, y, p) in image.enumerate_pixels() {
        let v = p[0] as f64;
        total += v;
        sx += v * (x as f64 + 0.5);
        sy += v * (y as f64 + 0.5);
    }
    (total > 0.0).then(|| (sx / total, sy / total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    /// A `width × height` picture of `background` with the rectangle `xs × ys` in `ink`.
    fn rectangle(width: u32, height: u32, xs: Range<u32>, ys: Range<u32>, ink: u8, background: u8) -> GrayImage {
        GrayImage::from_fn(width, height, |x, y| {
            Luma([if xs.contains(&x) && ys.contains(&y) { ink } else { background }])
        })
    }

    /// A dark 6×10 bar on white, off-centre in a 100×80 picture.
    fn dark_bar_on_white() -> GrayImage {
        rectangle(100, 80, 70..76, 5..15, 0, 255)
    }

    #[test]
    fn an_empty_file_is_said_to_be_empty() {
        let err = decode_gray(&[]).unwrap_err().to_string();
        assert!(err.starts_with("empty file"), "{err}");
        let err = decode_gray(b"not a picture").unwrap_err().to_string();
        assert!(err.contains("not a readable image") || err.contains("cannot read"), "{err}");
    }

    #[test]
    fn dark_on_light_is_inverted_and_centred_by_mass() {
        let input = fit_into_frame(&dark_bar_on_white(), 28, 28, Framing::Digits, Invert::Auto).unwrap();
        assert!(input.inverted);
        let (cx, cy) = centre_of_mass(&input.image).unwrap();
        assert!((cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0, "centre of mass at ({cx}, {cy})");
        // The content's longer side is scaled to the 20-pixel box.
        let rows_with_ink = (0..28).filter(|&y| (0..28).any(|x| input.image.get_pixel(x, y)[0] > 64)).count();
        assert!((19..=21).contains(&rows_with_ink), "{rows_with_ink} rows");
        // Border black, content white.
        assert_eq!(input.image.get_pixel(0, 0)[0], 0);
        assert!(input.pixels.iter().cloned().fold(0.0, f32::max) > 0.9);
    }

    #[test]
    fn light_on_dark_is_left_alone_and_fashion_fills_the_frame() {
        let mut picture = dark_bar_on_white();
        imageops::invert(&mut picture);
        let input = fit_into_frame(&picture, 28, 28, Framing::Fashion, Invert::Auto).unwrap();
        assert!(!input.inverted);
        let rows_with_ink = (0..28).filter(|&y| (0..28).any(|x| input.image.get_pixel(x, y)[0] > 64)).count();
        assert_eq!(rows_with_ink, 28);
    }

    /// A 28×28 picture in MNIST's layout: black, a stroke inside the central 20×20 box, centred.
    fn mnist_like() -> GrayImage {
        rectangle(28, 28, 12..16, 6..22, 250, 0)
    }

    #[test]
    fn auto_leaves_a_picture_in_the_frame_layout_alone() {
        let picture = mnist_like();
        for framing in [Framing::Auto, Framing::AsIs] {
            let input = fit_into_frame(&picture, 28, 28, framing, Invert::Auto).unwrap();
            assert_eq!(input.framing, Framing::AsIs);
            assert!(!input.inverted);
            assert_eq!(input.image, picture, "{framing:?} changed the picture");
        }
        // The digits framing re-crops it: the 16-pixel stroke becomes 20 pixels tall.
        let refitted = fit_into_frame(&picture, 28, 28, Framing::Digits, Invert::Auto).unwrap();
        assert_ne!(refitted.image, picture);
        // Off-centre or touching the border: not the layout, so auto fits it.
        let shifted = rectangle(28, 28, 0..4, 0..10, 250, 0);
        assert_eq!(fit_into_frame(&shifted, 28, 28, Framing::Auto, Invert::Auto).unwrap().framing, Framing::Digits);
        // For Fashion-MNIST, whose items touch the frame, a dark background on average is the layout.
        let item = rectangle(28, 28, 6..22, 3..28, 200, 0);
        assert_eq!(resolve_framing(Framing::Auto, &item, Invert::Auto, 28, 28, Framing::Fashion), Framing::AsIs);
        assert_eq!(resolve_framing(Framing::Auto, &item, Invert::Auto, 28, 28, Framing::Digits), Framing::Digits);
        // Another size: not the layout either.
        let small = imageops::resize(&picture, 20, 20, imageops::FilterType::Triangle);
        assert_eq!(resolve_framing(Framing::Auto, &small, Invert::Auto, 28, 28, Framing::Fashion), Framing::Fashion);
    }

    #[test]
    fn none_only_inverts_and_resizes() {
        let mut picture = mnist_like();
        imageops::invert(&mut picture);
        let big = imageops::resize(&picture, 56, 56, imageops::FilterType::Nearest);
        let input = fit_into_frame(&big, 28, 28, Framing::AsIs, Invert::Auto).unwrap();
        assert!(input.inverted);
        assert_eq!(input.image.dimensions(), (28, 28));
        // The stroke stays where it was: columns 12..16 lit, column 4 dark.
        assert!(input.image.get_pixel(13, 14)[0] > 200);
        assert_eq!(input.image.get_pixel(4, 14)[0], 0);
    }

    #[test]
    fn transparency_is_paper_under_dark_and_light_ink() {
        use image::{DynamicImage, LumaA, Rgba, RgbaImage};
        let stroke = |x: u32, y: u32| (8..12).contains(&x) && (4..16).contains(&y);
        // Black ink on a transparent background whose hidden colour is black too (what a canvas saves).
        let canvas =
            RgbaImage::from_fn(20, 20, |x, y| if stroke(x, y) { Rgba([0, 0, 0, 255]) } else { Rgba([0, 0, 0, 0]) });
        let gray = flatten_alpha(&DynamicImage::ImageRgba8(canvas));
        assert_eq!((gray.get_pixel(0, 0)[0], gray.get_pixel(10, 10)[0]), (255, 0));
        let input = fit_into_frame(&gray, 28, 28, Framing::Digits, Invert::Auto).unwrap();
        assert!(input.inverted);
        // White ink on transparent: the paper is black.
        let light =
            image::GrayAlphaImage::from_fn(
                20,
                20,
                |x, y| if stroke(x, y) { LumaA([255, 255]) } else { LumaA([255, 0]) },
            );
        let gray = flatten_alpha(&DynamicImage::ImageLumaA8(light));
        assert_eq!((gray.get_pixel(0, 0)[0], gray.get_pixel(10, 10)[0]), (0, 255));
    }

    #[test]
    fn a_faint_thin_stroke_is_stretched_and_a_dot_is_warned_about() {
        // A 3-pixel pen on a 1000-pixel canvas, 700 pixels tall.
        let thin = rectangle(1000, 1000, 500..503, 150..850, 0, 255);
        let input = fit_into_frame(&thin, 28, 28, Framing::Digits, Invert::Auto).unwrap();
        assert_eq!(input.image.pixels().map(|p| p[0]).max(), Some(255), "stretched to full brightness");
        assert!(input.warning.is_none());
        let dot = rectangle(1000, 1000, 500..510, 500..510, 0, 255);
        let warning = fit_into_frame(&dot, 28, 28, Framing::Digits, Invert::Auto).unwrap().warning.unwrap();
        assert!(warning.contains("10x10 pixels of a 1000x1000 picture"), "{warning}");
    }

    /// A dark stroke on a white 1000×1000 scan: a bar across the top and a stem down from its right end.
    fn scanned_seven() -> GrayImage {
        GrayImage::from_fn(1000, 1000, |x, y| {
            let bar = (300..700).contains(&x) && (200..240).contains(&y);
            let stem = (660..700).contains(&x) && (200..800).contains(&y);
            Luma([if bar || stem { 0 } else { 255 }])
        })
    }

    #[test]
    fn a_speck_far_from_the_digit_is_left_out_of_the_crop() {
        let clean = fit_into_frame(&scanned_seven(), 28, 28, Framing::Digits, Invert::Auto).unwrap();
        for (xs, ys) in [(10..14, 10..14), (980..984, 990..994), (20..24, 900..904)] {
            let mut specked = scanned_seven();
            for (x, y) in xs.clone().flat_map(|x| ys.clone().map(move |y| (x, y))) {
                specked.put_pixel(x, y, Luma([0]));
            }
            let input = fit_into_frame(&specked, 28, 28, Framing::Digits, Invert::Auto).unwrap();
            assert_eq!(input.image, clean.image, "a speck at {xs:?} x {ys:?} moved the digit");
        }
    }

    #[test]
    fn the_parts_of_a_digit_near_its_mass_are_kept() {
        // An "i": a stem and, 60 px above it, a dot with 8% of its ink.
        let stem = |x: u32, y: u32| (480..520).contains(&x) && (400..900).contains(&y);
        let dot = |x: u32, y: u32| (480..520).contains(&x) && (300..340).contains(&y);
        let i = GrayImage::from_fn(1000, 1000, |x, y| Luma([if stem(x, y) || dot(x, y) { 0 } else { 255 }]));
        let stem_only = GrayImage::from_fn(1000, 1000, |x, y| Luma([if stem(x, y) { 0 } else { 255 }]));
        let with_dot = fit_into_frame(&i, 28, 28, Framing::Digits, Invert::Auto).unwrap();
        let without = fit_into_frame(&stem_only, 28, 28, Framing::Digits, Invert::Auto).unwrap();
        assert_ne!(with_dot.image, without.image, "the dot was dropped");
        // The dot is in the frame, above the stem with a gap between them.
        let column: Vec<u8> = (0..28).map(|y| with_dot.image.get_pixel(14, y)[0]).collect();
        assert!(column.windows(3).any(|w| w[0] > 128 && w[1] < 64), "no gap between dot and stem: {column:?}");
        // A "5" whose top bar is separate from its body: both kept.
        let bar = |x: u32, y: u32| (300..700).contains(&x) && (150..190).contains(&y);
        let body = |x: u32, y: u32| (300..340).contains(&x) && (230..850).contains(&y);
        let five = GrayImage::from_fn(1000, 1000, |x, y| Luma([if bar(x, y) || body(x, y) { 0 } else { 255 }]));
        let mut inverted = five.clone();
        imageops::invert(&mut inverted);
        let parts = ink_components(&inverted, 30);
        assert_eq!(parts.len(), 2);
        assert_eq!(digit_box(&parts), Some(Bounds { x0: 300, y0: 150, x1: 699, y1: 849 }));
    }

    #[test]
    fn blank_pictures_are_an_error() {
        let blank = GrayImage::from_pixel(30, 30, Luma([255]));
        let err = fit_into_frame(&blank, 28, 28, Framing::Digits, Invert::Auto).err().unwrap().to_string();
        assert!(err.contains("blank"), "{err}");
    }
}
