//! Walks over many users at once: a walk of a backup with a cold page cache is mostly
//! waiting for inodes and directory blocks, and more requests in flight finish sooner, even
//! on 2 cores (`check`, `status`; the scale curve in docs/BENCHMARKS.md).

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many threads a walk over the users uses: at least 16, one per core on bigger
/// machines. (100 000 messages on the project's 2-core VM, cache dropped: `check` took 17
/// to 19 s one user at a time, 5 to 6 s with 4 threads, 2.5 to 3 s with 16.)
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(16, 64)
}

/// `work` applied to every item by up to `threads` threads, this one among them, each
/// taking the next item as it finishes one (users differ in size a thousandfold); the
/// results in the items' order. A thread that cannot be started (a `TasksMax` or
/// `ulimit -u` reached) is no error: the threads there are, at least this one, do the work.
pub fn map<T: Sync, R: Send>(items: &[T], threads: usize, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut mine = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break mine };
            mine.push((i, work(item)));
        }
    };
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let helpers: Vec<_> =
            (1..threads).filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, worker).ok()).collect();
        let mut all = worker();
        // A panic in a helper is a bug: it is carried on into this thread.
        for h in helpers {
            all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_the_order_of_the_items_whatever_the_threads() {
        // Items take different times, so that the threads finish them out of order.
        let slow_square = |i: &u64| {
            std::thread::sleep(std::time::Duration::from_micros(i % 7 * 100));
            i * i
        };
        let items: Vec<u64> = (0..200).collect();
        let serial: Vec<u64> = items.iter().map(|i| i * i).collect();
        for threads in [0, 1, 2, 7, 16, 5000] {
            assert_eq!(map(&items, threads, slow_square), serial, "{threads} threads");
        }
        assert!(map(&[] as &[u8], 4, |b| *b).is_empty());
    }
}
