//! Round trip: the simulator's partitioned random schedules (`dcgka sim`) with every device
//! on its own SQLite store, reopened from disk before every call it makes, end with the same
//! oracles as `dcgka sim`, and with the very same outcome as the run on volatile memory:
//! a device read back from its file behaves exactly as the one that wrote it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dcgka_device::{Commit, Storage, Stored};
use dcgka_sim::random::{RunConfig, RunReport, run, run_with};
use dcgka_sim::stores::{BoxError, PersistentStore};
use dcgka_store::{StorageKey, Store};

/// A store plugged into the simulator, counting its reopens.
struct Plug(Store, Arc<AtomicUsize>);

impl PersistentStore for Plug {
    fn commit(&mut self, commit: &Commit) -> Result<(), BoxError> {
        Ok(self.0.commit(commit)?)
    }

    fn load(&self) -> Result<Stored, BoxError> {
        Ok(self.0.load()?)
    }

    fn reopen(self: Box<Self>) -> Result<Box<dyn PersistentStore>, BoxError> {
        let Plug(store, reopens) = *self;
        reopens.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(Plug(store.reopen()?, reopens)))
    }
}

/// Runs `cfg` on volatile memory and on stores reopened before every call; both must
/// hold every oracle and agree on everything. Returns the deliveries checked.
fn round_trip(cfg: &RunConfig) -> usize {
    let memory = run(cfg, &mut |_, _| {});
    let dir = tempfile::tempdir().unwrap();
    let reopens = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&reopens);
    let on_disk = run_with(
        cfg,
        &mut |sim| {
            sim.reopen_stores = true;
            sim.use_stores(|d| {
                let key = StorageKey::from_bytes([d as u8; 32]);
                let store = Store::create(dir.path().join(format!("{d}.sqlite")), &key)?;
                Ok(Box::new(Plug(store, Arc::clone(&n))) as Box<dyn PersistentStore>)
            })
        },
        &mut |_, _| {},
    );
    let strip = |r: &RunReport| RunReport { elapsed_ms: 0, ..r.clone() };
    assert!(on_disk.violations.is_empty(), "seed {}: {:#?}", cfg.seed, on_disk.violations);
    assert!(on_disk.converged, "seed {}", cfg.seed);
    // (A run whose group emptied near its end may have no delivery left to check.)
    assert_eq!(on_disk.deliveries_ok, on_disk.deliveries_expected, "seed {}", cfg.seed);
    assert_eq!(strip(&on_disk), strip(&memory), "seed {}: the stored run differs from the one in memory", cfg.seed);
    let reopens = reopens.load(Ordering::Relaxed);
    assert!(reopens > on_disk.packets, "seed {}: {reopens} reopens for {} packets", cfg.seed, on_disk.packets);
    eprintln!(
        "seed {}: {} steps, {} packets, {} messages, {} deliveries, {reopens} reopens, {} ms on disk",
        cfg.seed, cfg.steps, on_disk.packets, on_disk.app_messages, on_disk.deliveries_ok, on_disk.elapsed_ms
    );
    on_disk.deliveries_ok
}

#[test]
fn random_partitioned_schedules_on_stores_reopened_before_every_call() {
    // `dcgka sim`'s defaults (4 members, 2 partitions, 5% duplicates and drops, shadows and
    // the confidentiality oracle on), shorter; one run with coalesced acks.
    let long = std::env::var_os("DCGKA_LONG").is_some();
    let steps = if long { 200 } else { 60 };
    let mut deliveries = 0;
    for seed in 0..if long { 8 } else { 2 } {
        deliveries += round_trip(&RunConfig::new(4, steps, seed));
    }
    deliveries += round_trip(&RunConfig { coalesce_acks: true, ..RunConfig::new(4, steps, 7) });
    assert!(deliveries > 100, "{deliveries} deliveries checked");
}
