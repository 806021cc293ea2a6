//! Running the detector passes (`passes`) in batches that share a network and an input
//! size, with SSD's doubtful boxes given to Tiny for a second look.

use image::RgbImage;

use super::Engine;
use super::passes::{
    Detector, DetectorInput, Net, SSD_DOUBT, TINY_CROP_RETRY, TINY_CROP_RETRY_MIN_SCORE,
    detector_passes, is_crop_shaped,
};
use crate::backend::BackendKind;
use crate::detect::{self, DetectParams, FaceBox};
use crate::error::EngineError;
use crate::gpu::{DeviceImages, WarpJob};
use crate::net::NetInput;
use crate::{models, prep};

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
        for group in order.chunk_by(|&a, &b| passes[a].1 == passes[b].1) {
            let step = match self.models.backend().kind {
                BackendKind::Wgpu => self.config.max_batch.max(1),
                _ => self
                    .config
                    .max_batch
                    .clamp(1, passes[group[0]].1.net.max_cpu_batch()),
            };
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
            width,
            height,
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
        let letterbox = |j: &WarpJob, out: &mut [f32]| {
            prep::letterbox_cut_into(images[j.source], fit, width, height, out);
        };
        let input = self.input_rect(on_device, &jobs, width, height, letterbox)?;
        // SSD's boxes per image down to `floor`.
        let ssd = |input, floor: f32| -> Result<Vec<Vec<FaceBox>>, EngineError> {
            let (boxes, scores) = self.models.ssd_input(input)?;
            // Anchors per image: 5118 at 512x512, fewer on a cut input.
            let a = scores.len() / which.len().max(1);
            let params = DetectParams {
                min_score: floor,
                ..params(0.5)
            };
            Ok((0..which.len())
                .map(|k| {
                    detect::decode_ssd(
                        &boxes[k * a * 4..(k + 1) * a * 4],
                        &scores[k * a..(k + 1) * a],
                        models::SSD_SIZE,
                        scales[k],
                        &params,
                    )
                })
                .collect())
        };
        // Tiny's boxes for the images `ks` of the batch (`input` holds just those).
        let tiny = |input, ks: &[usize]| -> Result<Vec<Vec<FaceBox>>, EngineError> {
            let raw = self.models.tiny_input(input)?;
            let cell = prep::DETECTOR_CELL;
            let grid = ((width / cell) as usize, (height / cell) as usize);
            let per = 25 * grid.0 * grid.1;
            Ok(ks
                .iter()
                .enumerate()
                .map(|(j, &k)| {
                    detect::decode_tiny(&raw[j * per..(j + 1) * per], grid, scales[k], &params(0.4))
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
                            self.input_rect(None, &jobs, width, height, letterbox)?
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
