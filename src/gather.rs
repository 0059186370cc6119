//! Facts that more than one command gathers (no command imports another: what they share
//! lives here).

pub mod published_modules;

/// `items` produced on a thread of their own, a bounded queue (8 chunks of 1,024) ahead of the
/// caller: a walk's directory reads and stats overlap the decisions made on what it found, and
/// memory stays bounded whatever the number of items. The thread stops when the caller drops
/// the iterator.
pub fn ahead<T: Send + 'static>(items: impl Iterator<Item = T> + Send + 'static) -> impl Iterator<Item = T> {
    const CHUNK: usize = 1024;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<T>>(8);
    std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(CHUNK);
        for item in items {
            chunk.push(item);
            if chunk.len() == CHUNK && tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).is_err() {
                return; // the caller stopped reading
            }
        }
        let _ = tx.send(chunk);
    });
    rx.into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::ahead;

    #[test]
    fn ahead_yields_everything_in_order_across_chunk_boundaries() {
        for n in [0usize, 1, 1023, 1024, 1025, 9 * 1024 + 7] {
            let got: Vec<usize> = ahead(0..n).collect();
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "{n} items");
        }
    }

    #[test]
    fn a_reader_that_stops_early_stops_the_thread_too() {
        // Far more items than the queue holds: the producer must notice the reader is gone
        // instead of blocking forever or producing them all.
        let produced = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = produced.clone();
        let items = (0..10_000_000usize).inspect(move |_| {
            p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let first: Vec<usize> = ahead(items).take(10).collect();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        std::thread::sleep(std::time::Duration::from_millis(200));
        let n = produced.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n <= 10 * 1024 + 1024, "the producer ran {n} items ahead of a reader that stopped");
    }
}
