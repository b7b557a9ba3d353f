//! `--data-dir`: the store written through to disk, one file per object plus
//! the resourceVersion counter, each replaced by an atomic rename so a
//! SIGKILL loses at most the request in flight.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::store::{Gr, ObjKey};

/// The persisted counter and every persisted object.
pub type Loaded = (u64, Vec<(Gr, ObjKey, Value)>);

/// Writes and reads the persisted store.
#[derive(Debug, Clone)]
pub struct Persister {
    dir: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

impl Persister {
    /// Uses (and creates) `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir.join("objects"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn object_path(&self, gr: &Gr, key: &ObjKey) -> PathBuf {
        let id = format!("{}\0{}\0{}\0{}", gr.0, gr.1, key.0, key.1);
        let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join("objects").join(format!("{hex}.json"))
    }

    /// Records an object (or its removal with `None`) and the new counter.
    pub fn save(&self, gr: &Gr, key: &ObjKey, obj: Option<&Value>, rv: u64) -> anyhow::Result<()> {
        let path = self.object_path(gr, key);
        match obj {
            Some(o) => {
                let rec = json!({"group": gr.0, "resource": gr.1, "namespace": key.0, "name": key.1, "object": o});
                write_atomic(&path, &serde_json::to_vec(&rec)?)?;
            }
            None => match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            },
        }
        write_atomic(
            &self.dir.join("resource-version"),
            rv.to_string().as_bytes(),
        )
    }

    /// The counter and every object. The counter is at least the highest
    /// resourceVersion of any object, in case the process died between the
    /// two writes.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        let mut rv: u64 = match fs::read_to_string(self.dir.join("resource-version")) {
            Ok(s) => s.trim().parse().context("parsing resource-version")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).context("reading resource-version"),
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(self.dir.join("objects"))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let rec: Value = serde_json::from_slice(&fs::read(&path)?)
                .with_context(|| format!("parsing {}", path.display()))?;
            let s = |k: &str| rec[k].as_str().unwrap_or_default().to_string();
            let obj = rec["object"].clone();
            if let Some(orv) = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok())
            {
                rv = rv.max(orv);
            }
            out.push((
                (s("group"), s("resource")),
                (s("namespace"), s("name")),
                obj,
            ));
        }
        Ok((rv, out))
    }

    /// Reads a JSON side file (e.g. the tokens table).
    pub fn read_json(&self, name: &str) -> anyhow::Result<Option<Value>> {
        match fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a JSON side file atomically.
    pub fn write_json(&self, name: &str, v: &Value) -> anyhow::Result<()> {
        write_atomic(&self.dir.join(name), &serde_json::to_vec_pretty(v)?)
    }
}
