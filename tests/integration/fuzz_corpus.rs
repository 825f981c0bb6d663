//! The fuzz targets' seed corpora (`fuzz/corpus/<target>/`) replayed through the same entry points
//! the fuzzers use (`authsidecar::fuzzing`), so every seed, and every crash input saved there, is a
//! regression test of the normal suite.

#[test]
fn every_seed_of_every_fuzz_target_passes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, f) in authsidecar::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut n = 0;
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| f(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} fails on {}",
                path.display()
            );
            n += 1;
        }
        assert!(n > 0, "no seeds for {name}");
    }
}
