//! Which detector passes an image gets (face crops to Tiny at 128, photos to SSD and Tiny
//! on SSD's input, a second look at a crop where nothing was found) and running them in
//! batches that share an input size.

use image::RgbImage;

use super::{Detector, Engine};
use crate::detect::{self, DetectParams, FaceBox};
use crate::error::EngineError;
use crate::gpu::{DeviceImages, WarpJob};
use crate::models;
use crate::net::NetInput;
use crate::prep;

impl Engine {
    /// Face boxes per image, in original pixels, clipped to the image. Each image goes
    /// through the detector passes `detector_passes` picks for it (a later pass adds only
    /// faces the earlier ones did not find, `detect::add_unseen`); a face crop where they
    /// find nothing gets one more pass with a wider margin and a lower bar
    /// (`TINY_CROP_RETRY`) before the whole-frame fallback.
    pub(super) fn detect(
        &self,
        images: &[&RgbImage],
        on_device: Option<&DeviceImages>,
    ) -> Result<Vec<Vec<FaceBox>>, EngineError> {
        let detector = self.config.detector;
        let passes: Vec<(usize, DetectorInput)> = images
            .iter()
            .enumerate()
            .flat_map(|(i, img)| {
                detector_passes(detector, img.width(), img.height(), self.config.tiny_max)
                    .into_iter()
                    .map(move |input| (i, input))
            })
            .collect();
        let mut out = vec![Vec::new(); images.len()];
        let min_score = self.config.min_score;
        let found = self.run_detector(images, &passes, min_score, on_device)?;
        for (&(i, _), faces) in passes.iter().zip(found) {
            detect::add_unseen(&mut out[i], faces);
        }
        let retry: Vec<(usize, DetectorInput)> = out
            .iter()
            .enumerate()
            .filter(|(i, faces)| {
                faces.is_empty()
                    && detector != Detector::Ssd
                    && is_crop_shaped(images[*i].width(), images[*i].height())
            })
            .flat_map(|(i, _)| TINY_CROP_RETRY.map(|input| (i, input)))
            .collect();
        if !retry.is_empty() {
            let min_score = min_score.min(TINY_CROP_RETRY_MIN_SCORE);
            let found = self.run_detector(images, &retry, min_score, on_device)?;
            for (&(i, _), faces) in retry.iter().zip(found) {
                detect::add_unseen(&mut out[i], faces);
            }
        }
        Ok(out)
    }

    /// Runs each `(image, input)` pass; passes with the same input share a batch. One
    /// list of boxes per pass, clipped to its image.
    fn run_detector(
        &self,
        images: &[&RgbImage],
        passes: &[(usize, DetectorInput)],
        min_score: f32,
        on_device: Option<&DeviceImages>,
    ) -> Result<Vec<Vec<FaceBox>>, EngineError> {
        let mut order: Vec<usize> = (0..passes.len()).collect();
        order.sort_by_key(|&k| passes[k].1);
        let mut out = vec![Vec::new(); passes.len()];
        let step = self.config.max_batch.max(1);
        for group in order.chunk_by(|&a, &b| passes[a].1 == passes[b].1) {
            for chunk in group.chunks(step) {
                let which: Vec<usize> = chunk.iter().map(|&k| passes[k].0).collect();
                let input = passes[chunk[0]].1;
                let found = self.detect_batch(images, &which, input, min_score, on_device)?;
                for (&k, faces) in chunk.iter().zip(found) {
                    let img = images[passes[k].0];
                    out[k] = faces
                        .into_iter()
                        .filter_map(|b| b.clip(img.width(), img.height()))
                        .collect();
                }
            }
        }
        Ok(out)
    }

    /// The detector `input` names on `images[i]` for each `i` in `which`, each image
    /// letterboxed as `input` says.
    fn detect_batch(
        &self,
        images: &[&RgbImage],
        which: &[usize],
        input: DetectorInput,
        min_score: f32,
        on_device: Option<&DeviceImages>,
    ) -> Result<Vec<Vec<FaceBox>>, EngineError> {
        let DetectorInput {
            net,
            fit,
            side: size,
        } = input;
        let params = |iou_threshold| DetectParams {
            min_score,
            iou_threshold,
            max_results: 100,
        };
        let scales: Vec<f32> = which
            .iter()
            .map(|&i| prep::letterbox_scale(images[i].width(), images[i].height(), fit))
            .collect();
        let jobs: Vec<WarpJob> = which
            .iter()
            .map(|&i| WarpJob::letterbox(i, images[i].width(), images[i].height(), fit))
            .collect();
        let input = self.input(on_device, &jobs, size, |j| {
            prep::letterbox_fit(images[j.source], fit, size).0
        })?;
        // SSD's boxes per image down to `floor`.
        let ssd = |input, floor: f32| -> Result<Vec<Vec<FaceBox>>, EngineError> {
            let (boxes, scores) = self.models.ssd_input(input)?;
            let a = models::SSD_ANCHORS;
            let params = DetectParams {
                min_score: floor,
                ..params(0.5)
            };
            Ok((0..which.len())
                .map(|k| {
                    detect::decode_ssd(
                        &boxes[k * a * 4..(k + 1) * a * 4],
                        &scores[k * a..(k + 1) * a],
                        size,
                        scales[k],
                        &params,
                    )
                })
                .collect())
        };
        // Tiny's boxes for the images `ks` of the batch (`input` holds just those).
        let tiny = |input, ks: &[usize]| -> Result<Vec<Vec<FaceBox>>, EngineError> {
            let raw = self.models.tiny_input(input)?;
            let grid = (size / 32) as usize;
            let per = 25 * grid * grid;
            Ok(ks
                .iter()
                .enumerate()
                .map(|(j, &k)| {
                    detect::decode_tiny(
                        &raw[j * per..(j + 1) * per],
                        grid,
                        size,
                        scales[k],
                        &params(0.4),
                    )
                })
                .collect())
        };
        let all: Vec<usize> = (0..which.len()).collect();
        match net {
            Net::Ssd => ssd(input, min_score),
            Net::Tiny => tiny(input, &all),
            Net::SsdThenTiny => {
                // Faces SSD is sure of; an image where it also saw a doubtful one (a box
                // NMS kept, scored `SSD_DOUBT`..`min_score`) gets Tiny's second look.
                // A device batch is kept for Tiny (a handle); a host batch is not copied,
                // the doubtful images are letterboxed again instead.
                let on_device_input = matches!(input, NetInput::Device(_)).then(|| input.clone());
                let mut found = ssd(input, SSD_DOUBT.min(min_score))?;
                let mut doubtful = Vec::new();
                for (k, faces) in found.iter_mut().enumerate() {
                    if faces.iter().any(|b| b.score <= min_score) {
                        doubtful.push(k);
                        faces.retain(|b| b.score > min_score);
                    }
                }
                if !doubtful.is_empty() {
                    let again = match on_device_input {
                        Some(batch) => batch.select(&doubtful),
                        None => {
                            let jobs: Vec<WarpJob> = doubtful.iter().map(|&k| jobs[k]).collect();
                            self.input(None, &jobs, size, |j| {
                                prep::letterbox_fit(images[j.source], fit, size).0
                            })?
                        }
                    };
                    let second = tiny(again, &doubtful)?;
                    for (&k, extra) in doubtful.iter().zip(second) {
                        detect::add_unseen(&mut found[k], extra);
                    }
                }
                Ok(found)
            }
        }
    }
}

/// A face-less image at most this large on its longer side, and roughly square, is
/// taken to be a pre-cropped face.
const CROP_MAX_SIDE: u32 = 200;
const CROP_MAX_ASPECT: f32 = 1.5;

/// Default largest Tiny detector input side (`EngineConfig::tiny_max`).
pub const TINY_MAX_SIDE: u32 = 608;
/// Smallest Tiny detector input side: four grid cells.
const TINY_MIN_SIDE: u32 = 128;
/// A face crop goes to the Tiny detector with its longer side at this many pixels, in a
/// `TINY_CROP_SIDE` square (the rest black). Measured on the ten distinct CSE546 crops
/// (64 px, the face filling the frame): at a 64 px face (1x) Tiny finds none of them; with
/// the face at 96 px in a 128 square it finds all ten, with the lowest score 0.67, the
/// best margin of the sides (96-320) and scales (1-3x) tried, and the cheapest input.
const TINY_CROP_FIT: u32 = 96;
const TINY_CROP_SIDE: u32 = 128;
/// The second try on a face crop where the first pass found nothing: Tiny again with a
/// lower bar (`TINY_CROP_RETRY_MIN_SCORE`: the image is face-shaped, and the alternative
/// is guessing the face from the whole frame), at the first pass's input and with the
/// crop at 64 px in the 128 square, so a face that fills the frame (or more) gets the
/// margin Tiny's anchors need; the first input's faces are kept first. On 684 tight crops
/// of the evaluation faces (the face box filling 80-95% of a 64-200 px frame) the first
/// pass misses one to four (a head tilted behind a hand, 0.38-0.47 at the first input; a
/// tall face at 95%, found with the margin), and this finds them (`tests/accuracy.rs`).
const TINY_CROP_RETRY: [DetectorInput; 2] = [
    DetectorInput {
        net: Net::Tiny,
        fit: TINY_CROP_FIT,
        side: TINY_CROP_SIDE,
    },
    DetectorInput {
        net: Net::Tiny,
        fit: 64,
        side: TINY_CROP_SIDE,
    },
];
const TINY_CROP_RETRY_MIN_SCORE: f32 = 0.3;
/// The lowest SSD score that counts as a doubtful face (`Net::SsdThenTiny`): on the
/// evaluation photos the two faces SSD missed scored 0.22 and 0.46; the six demo photos
/// have no box between 0.15 and 0.5.
const SSD_DOUBT: f32 = 0.15;

/// A detector network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Net {
    Ssd,
    Tiny,
    /// SSD, then, where SSD saw a doubtful face (`SSD_DOUBT`), Tiny on the same 512 input
    /// for the faces SSD missed (`detect::add_unseen`): photos under `Auto`. SSD at 512
    /// scores some faces low when other faces crowd them (in a collage of actors a 260 px
    /// face at 0.22; a 62 px face between two people in a PASCAL VOC photo at 0.46); Tiny
    /// finds both and adds no false face on the evaluation photos (104 faces in 17
    /// photos). Sharing SSD's input costs no second resize of the photo, and face-api's
    /// demo photos have no doubtful box, so they cost nothing more (`benches/RESULTS.md`).
    SsdThenTiny,
}

/// How one image is detected: by which network, with its longer side resized to `fit`
/// pixels inside a `side` x `side` input (`prep::letterbox_fit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct DetectorInput {
    net: Net,
    fit: u32,
    side: u32,
}

/// The detector passes for a `w` x `h` image, the first one's faces kept first. `Auto`
/// sends images that look like face crops (at most 200 px, roughly square) to Tiny at 128,
/// and photos to SSD (which finds every face of face-api's demo photos where Tiny at 416
/// or 608 misses one in five) and Tiny on SSD's input (`Net::SsdThenTiny`).
fn detector_passes(detector: Detector, w: u32, h: u32, tiny_max: u32) -> Vec<DetectorInput> {
    let ssd = DetectorInput {
        net: Net::Ssd,
        fit: models::SSD_SIZE,
        side: models::SSD_SIZE,
    };
    let tiny = || {
        let side = tiny_side(w, h, tiny_max);
        DetectorInput {
            net: Net::Tiny,
            fit: side,
            side,
        }
    };
    let tiny_crop = DetectorInput {
        net: Net::Tiny,
        fit: TINY_CROP_FIT,
        side: TINY_CROP_SIDE,
    };
    match detector {
        Detector::Ssd => vec![ssd],
        Detector::Auto | Detector::Tiny if is_crop_shaped(w, h) => vec![tiny_crop],
        Detector::Auto => vec![DetectorInput {
            net: Net::SsdThenTiny,
            ..ssd
        }],
        Detector::Tiny => vec![tiny()],
    }
}

/// The Tiny detector's input side for an image that is not a face crop: its longer side
/// (upscaled at most `prep::MAX_UPSCALE`), at most `max`, rounded up to a multiple of 32.
pub fn tiny_side(w: u32, h: u32, max: u32) -> u32 {
    let max = (max / 32 * 32).max(TINY_MIN_SIDE);
    let fitted = (w.max(h) as f32 * prep::MAX_UPSCALE).min(max as f32);
    ((fitted / 32.0).ceil() as u32 * 32).clamp(TINY_MIN_SIDE, max)
}

pub(super) fn looks_like_face_crop(img: &RgbImage) -> bool {
    let (w, h) = img.dimensions();
    is_crop_shaped(w, h)
}

fn is_crop_shaped(w: u32, h: u32) -> bool {
    let aspect = w.max(h) as f32 / w.min(h).max(1) as f32;
    w.max(h) <= CROP_MAX_SIDE && w.min(h) >= 24 && aspect <= CROP_MAX_ASPECT
}
