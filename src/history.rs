//! Keeping history bounded: finished runs older than the retention age are deleted in
//! batches; running and waiting runs are never touched.

use std::time::Duration;

use crate::engine::Engine;

/// Delete finished runs older than `age` now, in batches; returns how many went.
pub async fn sweep(engine: &Engine, age: Duration) -> usize {
    let Ok(span) = jiff::SignedDuration::try_from(age) else {
        return 0;
    };
    let Ok(before) = engine.now_for_history().checked_sub(span) else {
        return 0;
    };
    let mut total = 0;
    loop {
        let store = engine.store().clone();
        match tokio::task::spawn_blocking(move || store.delete_finished_before(before, 500)).await {
            Ok(Ok(n)) => {
                total += n;
                if n < 500 {
                    return total;
                }
            }
            Ok(Err(e)) => {
                tracing::error!("retention sweep failed: {e}");
                return total;
            }
            Err(e) => {
                tracing::error!("retention sweep failed: {e}");
                return total;
            }
        }
    }
}

pub fn spawn_retention(engine: Engine, age: Duration) {
    tokio::spawn(async move {
        loop {
            let n = sweep(&engine, age).await;
            if n > 0 {
                tracing::info!(
                    "retention: deleted {n} finished runs older than {}",
                    crate::duration::format(age)
                );
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    });
}
