//! `weft build-python APP_DIR`: a Python worker into a component for
//! weft's world, with componentize-py (from PyPI) and the WIT and Python
//! SDK this binary carries, so it works from any directory.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The WIT package, as `wit/` in the repository.
const WIT: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../../wit/world.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("graph.wit", include_str!("../../../wit/graph.wit")),
    ("variable.wit", include_str!("../../../wit/variable.wit")),
    ("device.wit", include_str!("../../../wit/device.wit")),
    ("session.wit", include_str!("../../../wit/session.wit")),
];

/// The `weft` Python package, as `guest-sdk/python/weft/` in the repository.
const SDK: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../../../guest-sdk/python/weft/__init__.py")),
    ("_host.py", include_str!("../../../guest-sdk/python/weft/_host.py")),
    ("dtypes.py", include_str!("../../../guest-sdk/python/weft/dtypes.py")),
    ("errors.py", include_str!("../../../guest-sdk/python/weft/errors.py")),
    ("framework.py", include_str!("../../../guest-sdk/python/weft/framework.py")),
    ("ops.py", include_str!("../../../guest-sdk/python/weft/ops.py")),
    ("session.py", include_str!("../../../guest-sdk/python/weft/session.py")),
    ("train.py", include_str!("../../../guest-sdk/python/weft/train.py")),
    ("training.py", include_str!("../../../guest-sdk/python/weft/training.py")),
    ("variables.py", include_str!("../../../guest-sdk/python/weft/variables.py")),
];

/// Runs componentize-py's command line from the `componentize_py` module.
const COMPONENTIZE: &str = "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; script()";

#[derive(Debug, clap::Args)]
pub(super) struct BuildPythonArgs {
    /// The directory holding the worker's module (and any modules it imports).
    app_dir: PathBuf,
    /// The module defining `WitWorld = weft.worker(main)`.
    #[arg(long, default_value = "app")]
    module: String,
    /// Where to write the component [default: APP_DIR's name + .wasm, here].
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The Python with componentize-py installed (`pip install componentize-py==0.25.1`).
    #[arg(long, env = "WEFT_PYTHON", default_value = "python3")]
    python: String,
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new directory of this user's alone (mode 0700 on Unix) under the
/// temporary directory: never one that already exists, which another user
/// could have planted modules or links in.
fn scratch_dir() -> std::io::Result<PathBuf> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    let mut tries = 0;
    loop {
        let suffix: u64 = rand::random();
        let dir = std::env::temp_dir().join(format!("weft-build-python-{}-{suffix:016x}", std::process::id()));
        match builder.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn write_all(dir: &Path, files: &[(&str, &str)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

pub(super) fn build_python(args: BuildPythonArgs) -> ExitCode {
    if !args.app_dir.join(format!("{}.py", args.module)).is_file() {
        super::say::error(format_args!("no {}.py in {}", args.module, args.app_dir.display()));
        return ExitCode::from(2);
    }
    let output = args.output.clone().unwrap_or_else(|| {
        let name = args.app_dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_owned()));
        PathBuf::from(name.unwrap_or_else(|| "app".into())).with_extension("wasm")
    });
    let scratch = match scratch_dir() {
        Ok(dir) => Scratch(dir),
        Err(e) => {
            super::say::error(format_args!("making a scratch directory under {}: {e}", std::env::temp_dir().display()));
            return ExitCode::from(2);
        }
    };
    let (wit, sdk) = (scratch.0.join("wit"), scratch.0.join("sdk"));
    if let Err(e) = write_all(&wit, WIT).and_then(|()| write_all(&sdk.join("weft"), SDK)) {
        super::say::error(format_args!("writing the WIT and SDK under {}: {e}", scratch.0.display()));
        return ExitCode::from(2);
    }
    let status = Command::new(&args.python)
        .args(["-c", COMPONENTIZE, "-d"])
        .arg(&wit)
        .args(["-w", "task-worker", "componentize", "-p"])
        .arg(&sdk)
        .arg("-p")
        .arg(&args.app_dir)
        .arg(&args.module)
        .arg("-o")
        .arg(&output)
        .status();
    match status {
        Ok(s) if s.success() => {
            super::say::info(format_args!("built {}", output.display()));
            ExitCode::SUCCESS
        }
        Ok(s) => {
            super::say::error(format_args!(
                "componentize-py failed ({s}); if it is not installed: `{} -m pip install componentize-py==0.25.1`",
                args.python
            ));
            ExitCode::from(1)
        }
        Err(e) => {
            super::say::error(format_args!("cannot run {}: {e}", args.python));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary carries every file of wit/ and of the Python package.
    #[test]
    fn every_wit_and_sdk_file_is_carried() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (dir, ext, carried) in [("wit", "wit", WIT), ("guest-sdk/python/weft", "py", SDK)] {
            let mut on_disk: Vec<String> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(&format!(".{ext}")))
                .collect();
            on_disk.sort();
            let mut names: Vec<String> = carried.iter().map(|(n, _)| n.to_string()).collect();
            names.sort();
            assert_eq!(names, on_disk, "{dir}");
        }
    }
}
