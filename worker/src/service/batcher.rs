//! The batcher: fills engine batches across messages (up to `max_batch` or `batch_wait`) and
//! runs each on the engine threads.

use super::finisher::batch_errors;
use super::*;
use facerec_seams::FaceStoreError;

impl Worker {
    /// Forms batches from the jobs in arrival order and queues each on the engine threads
    /// at once (up to one per engine thread outstanding), so jobs never wait here while an
    /// engine thread is free and batches run in the order their jobs arrived.
    pub(super) async fn batcher(self: Arc<Self>, mut rx: mpsc::Receiver<Job>) {
        let outstanding = Arc::new(Semaphore::new(self.compute.threads()));
        while let Some(first) = rx.recv().await {
            let Ok(permit) = outstanding.clone().acquire_owned().await else {
                return;
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + self.config.batch_wait;
            while batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(job) => {
                        batch.push(job);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                }
            }
            let worker = self.clone();
            let inputs: Vec<Bytes> = batch.iter().map(|j| j.bytes.clone()).collect();
            let reqs: Vec<Request> = batch.iter().map(|j| j.req.clone()).collect();
            let galleries = self.galleries_of(&reqs).await;
            let pending = self
                .compute
                .submit(move |engine| worker.recognize(engine, &inputs, &reqs, &galleries));
            let worker = self.clone();
            tokio::spawn(async move {
                let results = match pending {
                    Ok(p) => compute::answer(p).await,
                    Err(e) => Err(e),
                }
                .unwrap_or_else(|e| {
                    let err = ImageError::new(ErrorKind::Inference, format!("engine task: {e}"));
                    (batch_errors(&batch, &err), Vec::new())
                });
                drop(permit);
                // Responses and acks overlap with the next engine batch.
                let (results, seen) = results;
                worker.finish(batch, results, seen).await;
            });
        }
    }

    /// Runs the engine on one batch and matches the faces (blocking): each request's
    /// result, and the faces to record in the face store (none unless `index_faces` and
    /// a face store).
    pub(super) fn recognize(
        &self,
        engine: &Engine,
        inputs: &[Bytes],
        reqs: &[Request],
        galleries: &[Result<Arc<GalleryHandle>, ImageError>],
    ) -> (Vec<ResultMessage>, Vec<SeenFace>) {
        let slices: Vec<&[u8]> = inputs.iter().map(|b| b.as_ref()).collect();
        let (analyses, times) = engine.analyze(&slices);
        let m = &self.metrics;
        m.batch_size.observe(slices.len() as f64);
        m.stage("decode", times.decode);
        m.stage("detect", times.detect);
        m.stage("align", times.align);
        m.stage("embed", times.embed);
        let t = std::time::Instant::now();
        // A request naming a collection that does not exist is answered with that error.
        let results: Vec<_> = analyses
            .iter()
            .zip(galleries)
            .map(|(a, g)| match g {
                Ok(_) => a.as_ref(),
                Err(e) => Err(e),
            })
            .collect();
        // Every face of every image of one collection in one search.
        let mut matches = vec![Vec::new(); results.len()];
        let mut gallery_seqs = vec![0; results.len()];
        let mut groups: HashMap<*const GalleryHandle, Vec<usize>> = HashMap::new();
        for (i, g) in galleries.iter().enumerate() {
            if let Ok(g) = g {
                groups.entry(Arc::as_ptr(g)).or_default().push(i);
            }
        }
        for members in groups.into_values() {
            let Ok(handle) = &galleries[members[0]] else {
                continue;
            };
            let (gallery, seq) = handle.snapshot();
            let of: Vec<_> = members.iter().map(|&i| results[i]).collect();
            let found = report::match_faces(engine.matcher(), Some(&gallery), &of);
            for (&i, found) in members.iter().zip(found) {
                matches[i] = found;
                gallery_seqs[i] = seq;
            }
        }
        let index = self.config.index_faces && self.gallery.store().is_some();
        let seen_ms = facerec_seams::faces::now_ms();
        let mut seen = Vec::new();
        let out = results
            .into_iter()
            .zip(matches)
            .zip(reqs)
            .zip(gallery_seqs)
            .map(|(((a, found), req), gallery_seq)| {
                let rep = report::report(
                    &req.filename,
                    a,
                    found,
                    self.config.threshold,
                    req.embeddings,
                );
                let size = a.ok().map(|a| (a.width, a.height));
                let result = ResultMessage::from_report(req, rep, size);
                if let (true, false, Ok(a)) = (index, req.probe, a) {
                    seen.extend(seen_faces(req, a, &result, gallery_seq, seen_ms));
                }
                result
            })
            .collect();
        m.stage("match", t.elapsed());
        (out, seen)
    }
}

impl Worker {
    /// The gallery of each request's collection, loaded when first named: a collection
    /// that does not exist is the request's error; one that cannot be loaded now is an
    /// `Inference` error (the request is tried again later).
    async fn galleries_of(&self, reqs: &[Request]) -> Vec<Result<Arc<GalleryHandle>, ImageError>> {
        let mut out = Vec::with_capacity(reqs.len());
        for req in reqs {
            let Some(name) = req.collection.as_deref() else {
                out.push(Ok(self.gallery.clone()));
                continue;
            };
            out.push(self.galleries.get(name).await.map_err(|e| match e {
                FaceStoreError::NotFound(m) => ImageError::new(ErrorKind::UnknownCollection, m),
                e => ImageError::new(
                    ErrorKind::Inference,
                    format!("loading the gallery of collection {name:?}: {e}"),
                ),
            }));
        }
        out
    }
}

/// The faces of one recognised upload as the face store records them: where each was
/// seen, its embedding and whom it was matched to (as its answer says).
fn seen_faces(
    req: &Request,
    analysis: &facerec_engine::Analysis,
    result: &ResultMessage,
    gallery_seq: i64,
    seen_ms: i64,
) -> Vec<SeenFace> {
    let reports = result.faces.as_deref().unwrap_or_default();
    analysis
        .faces
        .iter()
        .zip(reports)
        .enumerate()
        .map(|(i, (face, report))| SeenFace {
            request_id: req.request_id.clone(),
            face_index: i as u32,
            batch: req.batch.clone(),
            filename: req.filename.clone(),
            bbox: report.bbox,
            score: report.score,
            side: face.bbox.side(),
            embedding: face.embedding.clone(),
            identity: report.identity.clone(),
            distance: report.distance,
            nearest: report.nearest.clone(),
            gallery_seq,
            seen_ms,
            quality: Some(face.quality),
        })
        .collect()
}
