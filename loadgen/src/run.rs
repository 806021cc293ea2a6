//! A run: every request sent, every answer checked, the report.

use std::sync::Arc;
use std::time::Instant;

use crate::client;
use crate::config::{Config, Route};
use crate::items::Item;
use crate::outcome::{OnDone, Outcome};
use crate::pool::pool;
use crate::report::{Report, summarise};

/// Runs the load; `on_done` is called after every answer (progress bars).
pub async fn run(
    cfg: &Config,
    items: &[Item],
    on_done: impl Fn() + Send + Sync + 'static,
) -> Report {
    let on_done: OnDone = Arc::new(on_done);
    let start = Instant::now();
    let outcomes = if items.is_empty() {
        Vec::new()
    } else if cfg.route == Route::Batch {
        crate::batch::run(cfg, items, on_done).await
    } else {
        per_request(cfg, items, on_done).await
    };
    summarise(cfg, &outcomes, start.elapsed().as_secs_f64())
}

/// One request per image, `cfg.concurrency` clients.
async fn per_request(cfg: &Config, items: &[Item], on_done: OnDone) -> Vec<Outcome> {
    let items: Arc<Vec<Item>> = Arc::new(items.to_vec());
    let cfg = Arc::new(cfg.clone());
    let (clients, jobs) = (cfg.concurrency, cfg.requests);
    pool(clients, jobs, move |i| {
        let (items, cfg, on_done) = (items.clone(), cfg.clone(), on_done.clone());
        async move {
            let item = &items[i % items.len()];
            let req = client::item_request(&cfg, item);
            let t = Instant::now();
            let answer = tokio::time::timeout(cfg.timeout, client::exchange(&cfg.addr, req)).await;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let outcome = match answer {
                Err(_) => Outcome::failed("timeout", ms),
                Ok(Err(_)) => Outcome::failed("io", ms),
                Ok(Ok((status, body))) => Outcome::answered(cfg.route, item, status, &body, ms),
            };
            on_done();
            vec![outcome]
        }
    })
    .await
}
