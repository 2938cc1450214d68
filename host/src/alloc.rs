//! The host's global allocator: mimalloc, with a small cache of freed big
//! blocks in front of it, so buffers a step allocates every time come back
//! warm.
//!
//! A step that moves or makes a big tensor allocates the same buffers each
//! time: a 64 MiB tensor assembled from the network, a kernel's output.
//! mimalloc gives every such huge allocation fresh pages, which the kernel
//! faults in and zeroes one by one as they are first written (measured here
//! at about 2.3 µs a page: 35-40 ms for 64 MiB, longer than moving the bytes
//! over loopback). The cache keeps a few freed blocks of
//! [`MIN_CACHED_BYTES`] or more and hands one back for the next allocation
//! of the same size and alignment.
//!
//! Bounded: at most [`SLOTS`] blocks and [`MAX_CACHED_BYTES`] in all, the
//! oldest going first. A block unused for [`KEEP_FOR`] goes back to
//! mimalloc at the next big allocation or free, or when
//! [`release_expired`] runs (the `weft` binary calls it every second), so
//! an idle host holds none of it. `WEFT_ALLOC_CACHE=0` turns the cache
//! off (for A/B measurements).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;

/// Allocations of at least this many bytes are kept for reuse when freed.
pub const MIN_CACHED_BYTES: usize = 4 << 20;
/// The most the cache holds, in all.
pub const MAX_CACHED_BYTES: usize = 128 << 20;
/// The most blocks the cache holds.
pub const SLOTS: usize = 8;
/// How long a freed block waits for reuse.
pub const KEEP_FOR: Duration = Duration::from_secs(2);

/// A block of memory the allocator handed out: where, and its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Its address.
    pub addr: usize,
    /// Its layout's size.
    pub size: usize,
    /// Its layout's alignment.
    pub align: usize,
}

#[derive(Clone, Copy, Debug)]
struct Kept {
    block: Block,
    since: Instant,
}

/// Blocks the cache let go of, for the caller to free once the cache is
/// unlocked (never more than the slots plus the block being kept).
#[derive(Debug, Default)]
pub struct Released {
    blocks: [Option<Block>; SLOTS + 1],
}

impl Released {
    fn push(&mut self, block: Block) {
        let slot = self.blocks.iter_mut().find(|b| b.is_none()).expect("released blocks fit: at most slots + 1");
        *slot = Some(block);
    }

    /// The released blocks.
    pub fn iter(&self) -> impl Iterator<Item = Block> + '_ {
        self.blocks.iter().flatten().copied()
    }
}

/// Freed big blocks waiting for reuse. Pure bookkeeping: it never touches
/// the memory, so its rules are tested with made-up addresses.
#[derive(Debug)]
pub struct BlockCache {
    kept: [Option<Kept>; SLOTS],
    bytes: usize,
}

impl Default for BlockCache {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockCache {
    /// An empty cache.
    pub const fn new() -> Self {
        BlockCache { kept: [None; SLOTS], bytes: 0 }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The most recently kept block of exactly `size` and `align`, if any;
    /// and what expired by `now`.
    pub fn take(&mut self, size: usize, align: usize, now: Instant) -> (Option<Block>, Released) {
        let released = self.expire(now);
        let newest = (0..SLOTS)
            .filter(|&i| self.kept[i].is_some_and(|k| k.block.size == size && k.block.align == align))
            .max_by_key(|&i| self.kept[i].map(|k| k.since));
        (newest.and_then(|i| self.remove(i)), released)
    }

    /// Keeps `block` for reuse, letting go of the oldest blocks it displaces
    /// (or of `block` itself, if it is bigger than the whole cache).
    pub fn keep(&mut self, block: Block, now: Instant) -> Released {
        let mut released = self.expire(now);
        if block.size > MAX_CACHED_BYTES {
            released.push(block);
            return released;
        }
        while self.bytes + block.size > MAX_CACHED_BYTES || self.kept.iter().all(Option::is_some) {
            let oldest = (0..SLOTS).filter(|&i| self.kept[i].is_some()).min_by_key(|&i| self.kept[i].map(|k| k.since));
            let oldest = oldest.expect("a full cache holds a block");
            released.push(self.remove(oldest).expect("an occupied slot"));
        }
        let free = self.kept.iter_mut().find(|k| k.is_none()).expect("a free slot after eviction");
        *free = Some(Kept { block, since: now });
        self.bytes += block.size;
        released
    }

    /// Lets go of every block kept for [`KEEP_FOR`] or longer by `now`.
    pub fn expire(&mut self, now: Instant) -> Released {
        let mut released = Released::default();
        for i in 0..SLOTS {
            if self.kept[i].is_some_and(|k| now.saturating_duration_since(k.since) >= KEEP_FOR) {
                released.push(self.remove(i).expect("an occupied slot"));
            }
        }
        released
    }

    fn remove(&mut self, i: usize) -> Option<Block> {
        let kept = self.kept[i].take()?;
        self.bytes -= kept.block.size;
        Some(kept.block)
    }
}

/// Whether freed big blocks are kept ([`set_caching`]).
static CACHING: AtomicBool = AtomicBool::new(true);

/// Turns keeping freed big blocks on or off (off: they go straight back to
/// mimalloc; blocks already kept expire as usual).
pub fn set_caching(on: bool) {
    CACHING.store(on, Ordering::Relaxed);
}

/// What the `weft` binary and the benchmarks do at start: caching unless
/// `WEFT_ALLOC_CACHE=0`, and a thread that lets go of expired blocks every
/// second.
pub fn start_from_env() {
    set_caching(std::env::var("WEFT_ALLOC_CACHE").as_deref() != Ok("0"));
    let releaser = std::thread::Builder::new().name("weft-alloc-release".into()).spawn(|| {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            release_expired();
        }
    });
    if let Err(e) = releaser {
        tracing::warn!("cannot start the thread that releases cached blocks ({e}): they expire at the next big allocation");
    }
}

/// The cache of [`HostAllocator`]: one per process, like the allocator.
static CACHE: Mutex<BlockCache> = Mutex::new(BlockCache::new());

fn with_cache<R>(f: impl FnOnce(&mut BlockCache) -> R) -> R {
    // Nothing panics while the lock is held; a poisoned lock is still sound.
    let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut cache)
}

/// Frees what the cache let go of (called with the cache unlocked).
fn free(released: Released) {
    for b in released.iter() {
        // SAFETY: every block in the cache was allocated by mimalloc with
        // this size and alignment, freed by its owner, and is freed once:
        // the cache hands each block out (or back) exactly once.
        unsafe { MiMalloc.dealloc(b.addr as *mut u8, Layout::from_size_align_unchecked(b.size, b.align)) }
    }
}

/// A cached block for `layout`, if the cache holds one.
fn reuse(layout: Layout) -> Option<*mut u8> {
    let (block, released) = with_cache(|c| c.take(layout.size(), layout.align(), Instant::now()));
    free(released);
    block.map(|b| b.addr as *mut u8)
}

/// Lets go of the blocks that waited [`KEEP_FOR`] without reuse.
pub fn release_expired() {
    free(with_cache(|c| c.expire(Instant::now())));
}

/// Bytes the process's cache holds now (0 unless [`HostAllocator`] is the
/// global allocator, or called directly).
pub fn cached_bytes() -> usize {
    with_cache(|c| c.bytes())
}

/// mimalloc with the big-block cache: the global allocator of the `weft`
/// binary and of the benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostAllocator;

// SAFETY: every pointer handed out comes from mimalloc with the layout
// asked for (a cached block was allocated with exactly that size and
// alignment), and every pointer freed goes back to mimalloc, at once or
// from the cache, exactly once.
unsafe impl GlobalAlloc for HostAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_CACHED_BYTES
            && let Some(p) = reuse(layout)
        {
            return p;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_CACHED_BYTES
            && let Some(p) = reuse(layout)
        {
            // SAFETY: the block is `layout.size()` bytes, and now the caller's.
            unsafe { p.write_bytes(0, layout.size()) };
            return p;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= MIN_CACHED_BYTES && CACHING.load(Ordering::Relaxed) {
            let block = Block { addr: ptr as usize, size: layout.size(), align: layout.align() };
            free(with_cache(|c| c.keep(block, Instant::now())));
            return;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc with `layout` (cached or not).
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn block(addr: usize, size: usize) -> Block {
        Block { addr, size, align: 8 }
    }

    #[test]
    fn a_kept_block_is_reused_only_for_its_own_layout() {
        let now = Instant::now();
        let mut c = BlockCache::new();
        assert!(c.keep(block(1, 64 * MIB), now).iter().next().is_none());
        assert_eq!(c.bytes(), 64 * MIB);
        assert_eq!(c.take(32 * MIB, 8, now).0, None, "another size");
        assert_eq!(c.take(64 * MIB, 16, now).0, None, "another alignment");
        assert_eq!(c.take(64 * MIB, 8, now).0, Some(block(1, 64 * MIB)));
        assert_eq!(c.take(64 * MIB, 8, now).0, None, "handed out once");
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn the_newest_of_equal_blocks_goes_first() {
        let now = Instant::now();
        let mut c = BlockCache::new();
        c.keep(block(1, 8 * MIB), now);
        c.keep(block(2, 8 * MIB), now + Duration::from_millis(1));
        assert_eq!(c.take(8 * MIB, 8, now + Duration::from_millis(2)).0, Some(block(2, 8 * MIB)));
    }

    #[test]
    fn the_cache_is_bounded_in_bytes_and_blocks_oldest_first() {
        let t = |ms| Instant::now() + Duration::from_millis(ms);
        let mut c = BlockCache::new();
        assert!(c.keep(block(0, 50 * MIB), t(0)).iter().next().is_none());
        assert!(c.keep(block(1, 50 * MIB), t(1)).iter().next().is_none());
        // 150 MiB > 128 MiB: the third pushes out the first.
        assert_eq!(c.keep(block(2, 50 * MIB), t(2)).iter().collect::<Vec<_>>(), vec![block(0, 50 * MIB)]);
        assert_eq!(c.bytes(), 100 * MIB);
        assert_eq!(c.take(50 * MIB, 8, t(3)).0, Some(block(2, 50 * MIB)));
        assert_eq!(c.take(50 * MIB, 8, t(3)).0, Some(block(1, 50 * MIB)));
        assert_eq!(c.take(50 * MIB, 8, t(3)).0, None, "block 0 was let go of");

        let mut c = BlockCache::new();
        let mut released = Vec::new();
        for i in 0..SLOTS + 2 {
            released.extend(c.keep(block(i, 4 * MIB), t(i as u64)).iter());
        }
        assert_eq!(released, vec![block(0, 4 * MIB), block(1, 4 * MIB)], "the oldest blocks go when slots run out");
        assert_eq!(c.bytes(), SLOTS * 4 * MIB);

        let huge = block(99, MAX_CACHED_BYTES + 1);
        assert_eq!(c.keep(huge, t(20)).iter().collect::<Vec<_>>(), vec![huge], "bigger than the cache: not kept");
    }

    #[test]
    fn blocks_expire_after_keep_for() {
        let now = Instant::now();
        let mut c = BlockCache::new();
        c.keep(block(1, 4 * MIB), now);
        c.keep(block(2, 8 * MIB), now + KEEP_FOR / 2);
        assert!(c.expire(now + KEEP_FOR / 4).iter().next().is_none());
        assert_eq!(c.expire(now + KEEP_FOR).iter().collect::<Vec<_>>(), vec![block(1, 4 * MIB)]);
        // Taking also lets go of what expired, whatever size is asked for.
        let (got, released) = c.take(1, 8, now + KEEP_FOR * 2);
        assert_eq!((got, released.iter().collect::<Vec<_>>()), (None, vec![block(2, 8 * MIB)]));
        assert_eq!(c.bytes(), 0);
    }

    /// The allocator itself, called directly (the test binary's global
    /// allocator is the system's): a freed big block comes back, zeroed
    /// when asked, and small ones are not kept. One test, as the cache is
    /// the process's.
    #[test]
    fn the_host_allocator_hands_a_freed_big_block_back() {
        let a = HostAllocator;
        let layout = Layout::from_size_align(MIN_CACHED_BYTES + 3 * 4096, 64).unwrap();
        // SAFETY: a non-zero layout; the block is written within its size
        // and freed once with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(0xAB, layout.size());
            a.dealloc(p, layout);
            assert!(cached_bytes() >= layout.size());
            let q = a.alloc_zeroed(layout);
            assert_eq!(q, p, "the freed block came back");
            let bytes = std::slice::from_raw_parts(q, layout.size());
            assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed zeroes a reused block");
            a.dealloc(q, layout);

            let small = Layout::from_size_align(4096, 8).unwrap();
            let before = cached_bytes();
            let s = a.alloc(small);
            a.dealloc(s, small);
            assert_eq!(cached_bytes(), before, "small blocks are not kept");
        }
        std::thread::sleep(KEEP_FOR);
        release_expired();
        assert_eq!(cached_bytes(), 0, "expired blocks go back to mimalloc");
    }
}
