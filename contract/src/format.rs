//! What kind of file an upload is, from its magic bytes (never its name): the check the
//! edge makes before storing an upload and the decoder makes before decoding it.

use image::ImageFormat;

use crate::error::{ErrorKind, ImageError};

/// Formats this build decodes. Anything else that `image` recognises is
/// `unsupported_format`; anything it does not recognise is `not_an_image`.
const SUPPORTED: [ImageFormat; 5] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Bmp,
    ImageFormat::Gif,
];

/// Identifies the image format from the first bytes of `bytes`.
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::new(ErrorKind::Empty, "the file is empty"));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        ImageError::new(
            ErrorKind::NotAnImage,
            "not an image: unknown file signature (JPEG, PNG, WebP, BMP or GIF expected)",
        )
    })?;
    if !SUPPORTED.contains(&format) {
        return Err(ImageError::new(
            ErrorKind::UnsupportedFormat,
            format!("{format:?} images are not supported (JPEG, PNG, WebP, BMP or GIF expected)"),
        ));
    }
    Ok(format)
}
