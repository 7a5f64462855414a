//! The EXIF orientation of a JPEG: phones store the sensor's pixels as they came and record in the Exif
//! segment how to turn them upright, which every viewer does. Read here from the bytes (the `image` crate
//! 0.24 does not), so a picture is classified the way people see it.

use image::DynamicImage;

/// The Exif `Orientation` tag.
const ORIENTATION_TAG: u16 = 0x0112;

/// The Orientation value (1 to 8) of a JPEG's Exif segment; `None` when the bytes are not a JPEG, have no
/// Exif segment or no valid tag.
pub fn jpeg_orientation(bytes: &[u8]) -> Option<u16> {
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return None;
        }
        let marker = bytes[at + 1];
        // Start of scan or end of image: the metadata segments come before.
        if marker == 0xDA || marker == 0xD9 {
            return None;
        }
        let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        let body = bytes.get(at + 4..at + 2 + length)?;
        if marker == 0xE1
            && let Some(tiff) = body.strip_prefix(b"Exif\0\0")
            && let Some(value) = tiff_orientation(tiff)
        {
            return Some(value);
        }
        at += 2 + length;
    }
    None
}

/// The Orientation value in the first IFD of a TIFF structure (what an Exif segment holds).
fn tiff_orientation(tiff: &[u8]) -> Option<u16> {
    let big_endian = match tiff.get(..4)? {
        [b'I', b'I', 42, 0] => false,
        [b'M', b'M', 0, 42] => true,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = tiff.get(at..at + 2)?;
        Some(if big_endian { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(at..at + 4)?.try_into().ok()?;
        Some(if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    };
    let ifd = u32_at(4)? as usize;
    let entries = u16_at(ifd)? as usize;
    (0..entries).map(|i| ifd + 2 + 12 * i).find(|&entry| u16_at(entry) == Some(ORIENTATION_TAG)).and_then(|entry| {
        // Type 3 (SHORT), one value, held in the first two bytes of the value field.
        let value = u16_at(entry + 8)?;
        (u16_at(entry + 2)? == 3 && (1..=8).contains(&value)).then_some(value)
    })
}

/// `image` turned upright as the Exif Orientation `value` says (1: as stored; 6: rotate 90° clockwise;
/// 8: 90° anticlockwise; 3: 180°; 2, 4, 5, 7: the mirrored forms).
pub fn apply(image: DynamicImage, value: u16) -> DynamicImage {
    match value {
        2 => image.fliph(),
        3 => image.rotate180(),
        4 => image.flipv(),
        5 => image.rotate90().fliph(),
        6 => image.rotate90(),
        7 => image.rotate270().fliph(),
        8 => image.rotate270(),
        _ => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal JPEG-like byte string: SOI, an APP1 Exif segment with one Orientation entry, EOI.
    fn with_orientation(value: u16, big_endian: bool) -> Vec<u8> {
        let mut tiff: Vec<u8> =
            if big_endian { b"MM\0\x2a\0\0\0\x08".to_vec() } else { b"II\x2a\0\x08\0\0\0".to_vec() };
        let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        tiff.extend(u16b(1));
        tiff.extend(u16b(ORIENTATION_TAG));
        tiff.extend(u16b(3));
        tiff.extend(if big_endian { 1u32.to_be_bytes() } else { 1u32.to_le_bytes() });
        tiff.extend(u16b(value));
        tiff.extend([0, 0, 0, 0, 0, 0]);
        let mut body = b"Exif\0\0".to_vec();
        body.extend(tiff);
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1];
        jpeg.extend(((body.len() + 2) as u16).to_be_bytes());
        jpeg.extend(body);
        jpeg.extend([0xFF, 0xD9]);
        jpeg
    }

    #[test]
    fn reads_the_tag_in_either_byte_order() {
        for value in 1..=8 {
            assert_eq!(jpeg_orientation(&with_orientation(value, false)), Some(value));
            assert_eq!(jpeg_orientation(&with_orientation(value, true)), Some(value));
        }
        assert_eq!(jpeg_orientation(&with_orientation(9, false)), None);
        assert_eq!(jpeg_orientation(b"\x89PNG\r\n"), None);
        assert_eq!(jpeg_orientation(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF]), None, "a truncated segment");
    }

    #[test]
    fn every_orientation_turns_the_corner_pixel_upright() {
        // Stored 3 wide, 2 tall, the upright top-left pixel marked where each orientation keeps it.
        let upright = image::GrayImage::from_fn(2, 3, |x, y| image::Luma([if (x, y) == (0, 0) { 255 } else { 0 }]));
        let upright = DynamicImage::ImageLuma8(upright);
        // What a camera stores for each value: the inverse of what `apply` does.
        let stored = |value: u16| match value {
            2 => upright.fliph(),
            3 => upright.rotate180(),
            4 => upright.flipv(),
            5 => upright.fliph().rotate270(),
            6 => upright.rotate270(),
            7 => upright.fliph().rotate90(),
            8 => upright.rotate90(),
            _ => upright.clone(),
        };
        for value in 1..=8 {
            assert_eq!(apply(stored(value), value).to_luma8(), upright.to_luma8(), "orientation {value}");
        }
    }
}
