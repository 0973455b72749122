use std::time::Instant;
use cf_cache::*;
fn main() {
    let dir = std::path::Path::new("/tmp/cfbench100k");
    let mut cfg = CacheConfig::new(dir);
    cfg.secret = Some(Secret::new(vec![7u8; 32]).unwrap());
    cfg.max_bytes = u64::MAX / 2;
    cfg.memory_max_entries = 0;
    if !dir.exists() {
        let c = ResponseCache::open(cfg.clone()).unwrap();
        let p = vec![b'x'; 2048];
        for n in 0..100_000u64 {
            c.put("b", &KeyBuilder::new("bench-v1").field_u64("n", n).finish(), &p, EntryMeta::default()).unwrap();
        }
    }
    for _ in 0..5 {
        let c = ResponseCache::open(cfg.clone()).unwrap();
        let t = Instant::now();
        let s = c.stats();
        eprintln!("stats {:?} entries {}", t.elapsed(), s.entries);
    }
}
