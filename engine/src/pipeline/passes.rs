//! Which detector passes an image gets: face crops to Tiny at 128 (and a second look
//! where nothing was found), photos to SSD and Tiny on SSD's input; each pass a network
//! and an input size.

use image::RgbImage;

use crate::models;
use crate::prep;

/// Which face detector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detector {
    /// Tiny for images that look like face crops; SSD and then Tiny on SSD's input for
    /// the rest (`detector_passes`): the default.
    #[default]
    Auto,
    /// SSD MobileNetV1, the image at 512 (in a 512x512 input, cut to the image), for every image.
    Ssd,
    /// Tiny Face Detector (tiny-YOLOv2) for every image, at an input fitted to it (a face
    /// crop at 128, a photo at `tiny_side`): the fastest, and misses faces in photos.
    Tiny,
}

impl std::str::FromStr for Detector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "ssd" | "ssd_mobilenetv1" => Ok(Self::Ssd),
            "tiny" | "tiny_face_detector" => Ok(Self::Tiny),
            other => Err(format!("unknown detector {other:?} (auto, ssd or tiny)")),
        }
    }
}

/// A face-less image at most this large on its longer side, and roughly square, is
/// taken to be a pre-cropped face.
const CROP_MAX_SIDE: u32 = 200;
const CROP_MAX_ASPECT: f32 = 1.5;

/// Default largest Tiny detector input side (`EngineConfig::tiny_max`).
pub const TINY_MAX_SIDE: u32 = 608;
/// A face crop goes to the Tiny detector with its longer side at this many pixels, in a
/// `TINY_CROP_SIDE` square (the rest black). Measured on the ten distinct CSE546 crops
/// (64 px, the face filling the frame): at a 64 px face (1x) Tiny finds none of them; with
/// the face at 96 px in a 128 square it finds all ten, with the lowest score 0.67, the
/// best margin of the sides (96-320) and scales (1-3x) tried, and the cheapest input.
const TINY_CROP_FIT: u32 = 96;
pub(super) const TINY_CROP_SIDE: u32 = 128;
/// The second try on a face crop where the first pass found nothing: Tiny again with a
/// lower bar (`TINY_CROP_RETRY_MIN_SCORE`: the image is face-shaped, and the alternative
/// is guessing the face from the whole frame), at the first pass's input and with the
/// crop at 64 px in the 128 square, so a face that fills the frame (or more) gets the
/// margin Tiny's anchors need; the first input's faces are kept first. On 684 tight crops
/// of the evaluation faces (the face box filling 80-95% of a 64-200 px frame) the first
/// pass misses one to four (a head tilted behind a hand, 0.38-0.47 at the first input; a
/// tall face at 95%, found with the margin), and this finds them (`tests/accuracy.rs`).
pub(super) const TINY_CROP_RETRY: [DetectorInput; 2] = [
    DetectorInput {
        net: Net::Tiny,
        fit: TINY_CROP_FIT,
        width: TINY_CROP_SIDE,
        height: TINY_CROP_SIDE,
    },
    DetectorInput {
        net: Net::Tiny,
        fit: 64,
        width: TINY_CROP_SIDE,
        height: TINY_CROP_SIDE,
    },
];
pub(super) const TINY_CROP_RETRY_MIN_SCORE: f32 = 0.3;
/// The lowest SSD score that counts as a doubtful face (`Net::SsdThenTiny`): on the
/// evaluation photos the two faces SSD missed scored 0.22 and 0.46; the six demo photos
/// have no box between 0.15 and 0.5.
pub(super) const SSD_DOUBT: f32 = 0.15;

/// A detector network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Net {
    Ssd,
    Tiny,
    /// SSD, then, where SSD saw a doubtful face (`SSD_DOUBT`), Tiny on the same input
    /// for the faces SSD missed (`detect::add_unseen`): photos under `Auto`. SSD at 512
    /// scores some faces low when other faces crowd them (in a collage of actors a 260 px
    /// face at 0.22; a 62 px face between two people in a PASCAL VOC photo at 0.46); Tiny
    /// finds both and adds no false face on the evaluation photos (104 faces in 17
    /// photos). Sharing SSD's input costs no second resize of the photo, and face-api's
    /// demo photos have no doubtful box, so they cost nothing more (`benches/RESULTS.md`).
    SsdThenTiny,
}

impl Net {
    /// Most images in one call of this network on a CPU backend (`EngineConfig::max_batch`
    /// caps it too; a GPU takes the whole batch).
    pub(super) fn max_cpu_batch(self) -> usize {
        match self {
            Net::Ssd | Net::SsdThenTiny => SSD_MAX_BATCH,
            Net::Tiny => usize::MAX,
        }
    }
}

/// Most photos in one SSD call on a CPU backend: one. SSD's first layers work on large
/// activations (at 512x352 the 176x256x32 maps of `conv1`, 5.8 MB a photo) and run at a
/// third of the processor's arithmetic peak, waiting on memory; a photo a call keeps them
/// closer to the cache, and larger calls also cost fresh memory (a batch of 16 at 512x512
/// is a 50 MB input). Measured in `benches/RESULTS.md`, "SSD a photo at a time". The
/// networks after it keep the whole batch; a GPU takes it all.
const SSD_MAX_BATCH: usize = 1;

/// How one image is detected: by which network, with its longer side resized to `fit`
/// pixels at the top left of a `width` x `height` input (`prep::letterbox_cut_into`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct DetectorInput {
    pub(super) net: Net,
    pub(super) fit: u32,
    pub(super) width: u32,
    pub(super) height: u32,
}

impl DetectorInput {
    /// `net` on a `w` x `h` image letterboxed at `fit` into a `side` square, cut to the
    /// rows and columns the image covers (`prep::letterbox_cut`): both detectors are fully
    /// convolutional, and their grids keep the square's top-left cells (SSD's anchors are
    /// cut with them, `models/ssd_mobilenetv1.md`). A 3:2 photo costs SSD a third less.
    fn cut(net: Net, fit: u32, side: u32, w: u32, h: u32) -> Self {
        let (width, height) = prep::letterbox_cut(w, h, fit, side);
        Self {
            net,
            fit,
            width,
            height,
        }
    }
}

/// The detector passes for a `w` x `h` image, the first one's faces kept first. `Auto`
/// sends images that look like face crops (at most 200 px, roughly square) to Tiny at 128,
/// and photos to SSD (which finds every face of face-api's demo photos where Tiny at 416
/// or 608 misses one in five) and Tiny on SSD's input (`Net::SsdThenTiny`).
pub(super) fn detector_passes(
    detector: Detector,
    w: u32,
    h: u32,
    tiny_max: u32,
) -> Vec<DetectorInput> {
    let ssd = |net| DetectorInput::cut(net, models::SSD_SIZE, models::SSD_SIZE, w, h);
    match detector {
        Detector::Ssd => vec![ssd(Net::Ssd)],
        Detector::Auto | Detector::Tiny if is_crop_shaped(w, h) => vec![DetectorInput::cut(
            Net::Tiny,
            TINY_CROP_FIT,
            TINY_CROP_SIDE,
            w,
            h,
        )],
        Detector::Auto => vec![ssd(Net::SsdThenTiny)],
        Detector::Tiny => {
            let side = tiny_side(w, h, tiny_max);
            vec![DetectorInput::cut(Net::Tiny, side, side, w, h)]
        }
    }
}

/// The Tiny detector's input side for an image that is not a face crop: its longer side
/// (upscaled at most `prep::MAX_UPSCALE`), at most `max`, rounded up to a multiple of 32.
pub fn tiny_side(w: u32, h: u32, max: u32) -> u32 {
    let max = (max / prep::DETECTOR_CELL * prep::DETECTOR_CELL).max(prep::DETECTOR_MIN_SIDE);
    let fitted = (w.max(h) as f32 * prep::MAX_UPSCALE).min(max as f32);
    prep::detector_side(fitted.ceil() as u32, max)
}

pub(super) fn looks_like_face_crop(img: &RgbImage) -> bool {
    let (w, h) = img.dimensions();
    is_crop_shaped(w, h)
}

pub(super) fn is_crop_shaped(w: u32, h: u32) -> bool {
    let aspect = w.max(h) as f32 / w.min(h).max(1) as f32;
    w.max(h) <= CROP_MAX_SIDE && w.min(h) >= 24 && aspect <= CROP_MAX_ASPECT
}
