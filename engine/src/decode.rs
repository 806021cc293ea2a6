//! Image decoding with limits: format sniffed from magic bytes (never the file name),
//! pixel-count guard against decompression bombs before any pixel is decoded, EXIF
//! orientation applied, every colour type (grey, 16-bit, CMYK JPEG, alpha) turned into RGB8.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

pub use facerec_contract::format::sniff;

use crate::error::{ErrorKind, ImageError};

/// Limits applied to every decoded image.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest accepted width x height, in pixels (header is checked before decoding).
    pub max_pixels: u64,
    /// Largest accepted side, in pixels.
    pub max_side: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: 64 * 1024 * 1024,
            max_side: 32_768,
        }
    }
}

/// Decodes `bytes` into an upright RGB8 image (GIF: first frame).
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    let format = sniff(bytes)?;
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    // Decoded RGBA16 is the widest layout we may meet: 8 bytes a pixel, plus slack.
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(1 << 20));
    reader.limits(image_limits);
    let mut decoder = reader.into_decoder().map_err(|e| classify(e, limits))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError::new(
            ErrorKind::Unusable,
            format!("image has no pixels ({w}x{h})"),
        ));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(ImageError::new(
            ErrorKind::TooLarge,
            format!(
                "{w}x{h} = {pixels} pixels is over the limit of {} pixels",
                limits.max_pixels
            ),
        ));
    }
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| classify(e, limits))?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

fn classify(err: image::ImageError, limits: &DecodeLimits) -> ImageError {
    use image::error::ImageError as E;
    match err {
        E::Limits(e) => ImageError::new(
            ErrorKind::TooLarge,
            format!(
                "image exceeds decoding limits ({e}; max {} pixels)",
                limits.max_pixels
            ),
        ),
        E::Unsupported(e) => ImageError::new(ErrorKind::UnsupportedFormat, e.to_string()),
        E::IoError(e) => ImageError::new(ErrorKind::Corrupt, format!("truncated image: {e}")),
        other => ImageError::new(ErrorKind::Corrupt, format!("corrupt image: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, ImageFormat, Luma, Rgb};

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        ImageBuffer::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]))
    }

    #[test]
    fn empty_input_is_empty() {
        let err = decode(&[], &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Empty);
    }

    #[test]
    fn text_is_not_an_image() {
        let err = decode(b"hello, this is not a picture", &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotAnImage);
    }

    #[test]
    fn tiff_is_recognised_but_unsupported() {
        let err = decode(b"II*\0\x08\0\0\0rest", &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnsupportedFormat);
    }

    #[test]
    fn truncated_png_is_corrupt() {
        let bytes = encode(&DynamicImage::ImageRgb8(gradient(64, 48)), ImageFormat::Png);
        let err = decode(&bytes[..bytes.len() / 2], &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Corrupt, "{err}");
    }

    #[test]
    fn every_supported_format_round_trips() {
        let src = DynamicImage::ImageRgb8(gradient(40, 30));
        for format in [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::Bmp,
            ImageFormat::Gif,
            ImageFormat::WebP,
        ] {
            let bytes = encode(&src, format);
            let rgb = decode(&bytes, &DecodeLimits::default())
                .unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(rgb.dimensions(), (40, 30), "{format:?}");
        }
    }

    #[test]
    fn grey_and_sixteen_bit_become_rgb() {
        let grey =
            DynamicImage::ImageLuma8(ImageBuffer::from_fn(8, 8, |x, _| Luma([x as u8 * 30])));
        let rgb = decode(&encode(&grey, ImageFormat::Png), &DecodeLimits::default()).expect("grey");
        assert_eq!(rgb.get_pixel(3, 0), &Rgb([90, 90, 90]));
        let deep =
            DynamicImage::ImageRgb16(ImageBuffer::from_fn(8, 8, |_, _| Rgb([65535u16, 0, 32896])));
        let rgb =
            decode(&encode(&deep, ImageFormat::Png), &DecodeLimits::default()).expect("16-bit");
        assert_eq!(rgb.get_pixel(0, 0), &Rgb([255, 0, 128]));
    }

    /// Fixtures made with Pillow (`tests/fixtures/`): a 60x40 card, red left half, blue
    /// right half, white top stripe.
    fn assert_upright_card(rgb: &RgbImage) {
        assert_eq!(rgb.dimensions(), (60, 40));
        let left = rgb.get_pixel(10, 25);
        let right = rgb.get_pixel(50, 25);
        let top = rgb.get_pixel(30, 1);
        assert!(left[0] > 180 && left[2] < 80, "left is red: {left:?}");
        assert!(right[2] > 180 && right[0] < 80, "right is blue: {right:?}");
        assert!(top.0.iter().all(|&c| c > 200), "top is white: {top:?}");
    }

    #[test]
    fn cmyk_jpeg_becomes_rgb() {
        let rgb = decode(
            include_bytes!("../tests/fixtures/cmyk.jpg"),
            &DecodeLimits::default(),
        )
        .expect("CMYK JPEG decodes");
        assert_upright_card(&rgb);
    }

    #[test]
    fn exif_orientation_is_applied() {
        let rgb = decode(
            include_bytes!("../tests/fixtures/exif_rot90.jpg"),
            &DecodeLimits::default(),
        )
        .expect("JPEG decodes");
        assert_upright_card(&rgb);
    }

    /// CRC-32 (IEEE) as PNG chunks use, so the forged header below is otherwise valid.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn pixel_bomb_is_rejected_before_decoding() {
        // A valid PNG header claiming 20000 x 20000 pixels with almost no data behind it.
        let bytes = encode(&DynamicImage::ImageRgb8(gradient(16, 16)), ImageFormat::Png);
        let mut bomb = bytes.clone();
        bomb[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let limits = DecodeLimits {
            max_pixels: 50_000_000,
            max_side: 30_000,
        };
        let err = decode(&bomb, &limits).unwrap_err();
        assert_eq!(err.kind, ErrorKind::TooLarge, "{err}");
    }
}
