//! Checkpoint files: round trips, damage, escapes, retention and quota.

use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ps() -> TaskId {
    TaskId::new("ps", 0)
}

fn vars() -> Vec<(String, Tensor)> {
    vec![
        ("W".to_string(), Tensor::from_f32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap()),
        ("global_step".to_string(), Tensor::scalar_i64(7)),
    ]
}

#[test]
fn save_and_load_round_trip_with_latest() {
    let root = dir("roundtrip");
    let c = CheckpointDir::new(&root, None);
    assert!(c.latest(&ps()).unwrap().is_none());
    let name = c.save(&ps(), "model.ckpt", Some(7), &vars(), 5).unwrap();
    assert_eq!(name, "model.ckpt-7");
    assert!(root.join("ps-0/model.ckpt-7.safetensors").is_file());
    assert!(root.join("ps-0/model.ckpt-7.index").is_file());
    let state = std::fs::read_to_string(root.join("ps-0/checkpoint")).unwrap();
    assert!(state.starts_with("model_checkpoint_path: \"model.ckpt-7\"\n"), "{state}");
    let loaded = c.load(&ps(), None, None).unwrap();
    assert_eq!((loaded.name.as_str(), loaded.step), ("model.ckpt-7", Some(7)));
    assert_eq!(loaded.tensors["W"], vars()[0].1);
    assert_eq!(loaded.tensors["global_step"], vars()[1].1);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn damaged_files_are_refused_naming_the_file() {
    let root = dir("damaged");
    let c = CheckpointDir::new(&root, None);
    c.save(&ps(), "m", Some(1), &vars(), 5).unwrap();
    let file = root.join("ps-0/m-1.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let err = c.load(&ps(), None, None).unwrap_err().to_string();
    assert!(err.contains("m-1.safetensors is damaged") && err.contains("fails its checksum"), "{err}");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = c.load(&ps(), None, None).unwrap_err().to_string();
    assert!(err.contains("is damaged"), "{err}");
    let err = c.load(&ps(), Some("m-2"), None).unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn prefixes_that_escape_are_refused() {
    for bad in ["../x", "/etc/passwd", "a/../../b", "", ".hidden", "a/", "a/./b"] {
        let err = CheckpointDir::check_prefix(bad).unwrap_err().to_string();
        assert!(err.contains("must be a relative path"), "{bad}: {err}");
    }
    for good in ["model.ckpt", "run1/model.ckpt", "a-b_c"] {
        CheckpointDir::check_prefix(good).unwrap();
    }
    let root = dir("escape");
    let c = CheckpointDir::new(&root, None);
    assert!(c.save(&ps(), "../../outside", Some(1), &vars(), 5).is_err());
    assert!(c.load(&ps(), Some("../x"), None).is_err());
    assert!(!root.exists(), "a refused save writes nothing");
    for bad in ["a\"b", "a\nb"] {
        assert!(CheckpointDir::check_prefix(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn only_the_newest_are_kept_and_the_quota_holds() {
    let root = dir("keep");
    let c = CheckpointDir::new(&root, None);
    for step in 1..=4 {
        c.save(&ps(), "m", Some(step), &vars(), 2).unwrap();
    }
    let mut files: Vec<String> =
        std::fs::read_dir(root.join("ps-0")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["checkpoint", "m-3.index", "m-3.safetensors", "m-4.index", "m-4.safetensors"]);
    // Another prefix's saves are not pruned by this one's max_to_keep.
    c.save(&ps(), "m-best", None, &vars(), 1).unwrap();
    c.save(&ps(), "m", Some(5), &vars(), 2).unwrap();
    assert!(root.join("ps-0/m-best.safetensors").is_file());
    assert_eq!(c.latest_of(&ps(), "m").unwrap().as_deref(), Some("m-5"));
    assert_eq!(c.load(&ps(), None, Some("m-best")).unwrap().name, "m-best");
    // A quota sized for max_to_keep saves holds: what a save prunes does not count.
    let one: u64 = ["safetensors", "index"]
        .iter()
        .map(|ext| std::fs::metadata(root.join(format!("ps-0/m-4.{ext}"))).unwrap().len())
        .sum();
    let fits = CheckpointDir::new(dir("quota-fits"), Some(2 * one + 200));
    for step in 6..=9 {
        fits.save(&ps(), "m", Some(step), &vars(), 2).unwrap();
    }
    let small = CheckpointDir::new(dir("quota"), Some(100));
    let err = small.save(&ps(), "m", Some(1), &vars(), 2).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.to_string().contains("checkpoint quota"), "{err}");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn steps_lists_the_kept_saves_of_a_prefix_with_their_files() {
    let root = dir("steps");
    let c = CheckpointDir::new(&root, None);
    assert!(c.steps(&ps(), "model").unwrap().is_empty());
    for step in [30, 10, 20] {
        c.save(&ps(), "model", Some(step), &vars(), 5).unwrap();
    }
    c.save(&ps(), "model", None, &vars(), 5).unwrap(); // no step: not listed
    c.save(&ps(), "other", Some(40), &vars(), 5).unwrap();
    assert_eq!(c.steps(&ps(), "model").unwrap(), vec![10, 20, 30]);
    assert_eq!(c.steps(&ps(), "other").unwrap(), vec![40]);
    // A listed save whose file is gone is not kept.
    std::fs::remove_file(root.join("ps-0/model-20.safetensors")).unwrap();
    assert_eq!(c.steps(&ps(), "model").unwrap(), vec![10, 30]);
    assert!(c.steps(&ps(), "../escape").is_err());
    let _ = std::fs::remove_dir_all(root);
}
