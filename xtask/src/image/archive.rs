//! The output archive: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) and,
//! over the same blobs, Docker's `manifest.json` with `RepoTags` — the layout `docker save`
//! writes since Docker 25. `podman load` and `ctr images import` read the OCI index (its
//! `org.opencontainers.image.ref.name` and `io.containerd.image.name` annotations name the
//! image), `docker load` reads `manifest.json` (older Docker knows only that one).
use std::{
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write as _},
    path::Path,
};

use anyhow::{Context as _, Result};
use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

use super::layer::{self, Layer};

/// Containerd's name annotation (a full reference), read by `ctr images import`.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// What the image says about itself.
pub struct Meta {
    /// The tracer's version: the tag.
    pub version: String,
    /// The source commit (`-dirty` appended when the tree had changes).
    pub revision: String,
    /// The repository's URL, when known.
    pub source: Option<String>,
    /// RFC 3339, the commit's time (reproducible).
    pub created: String,
}

impl Meta {
    /// `tracer:<version>`.
    pub fn tag(&self) -> String {
        format!("tracer:{}", self.version)
    }

    fn labels(&self) -> HashMap<String, String> {
        let source = self.source.as_deref().map(|s| ("org.opencontainers.image.source", s));
        [
            ("org.opencontainers.image.title", "tracer"),
            ("org.opencontainers.image.description", "Where a Kubernetes pod's packets die on a node (eBPF)"),
            ("org.opencontainers.image.version", &self.version),
            ("org.opencontainers.image.revision", &self.revision),
            ("org.opencontainers.image.created", &self.created),
            ("org.opencontainers.image.licenses", "MIT OR Apache-2.0"),
            ("org.opencontainers.image.base.name", "debian:bookworm (mmdebstrap, essential)"),
        ]
        .into_iter()
        .chain(source)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

fn sha256(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    layer::digest_string(h)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// The image configuration (entrypoint `tracer`, default command `watch`, labels).
fn config(meta: &Meta, layer: &Layer) -> Result<Vec<u8>> {
    let config = ConfigBuilder::default()
        .user("0:0".to_string())
        .env(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()])
        .entrypoint(vec![format!("/{}", layer::BINARY)])
        .cmd(vec!["watch".to_string()])
        .working_dir("/".to_string())
        .labels(meta.labels())
        .build()?;
    let image = ImageConfigurationBuilder::default()
        .created(meta.created.clone())
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(config)
        .rootfs(RootFsBuilder::default().typ("layers".to_string()).diff_ids(vec![layer.diff_id.clone()]).build()?)
        .history(vec![
            HistoryBuilder::default()
                .created(meta.created.clone())
                .created_by(format!("cargo xtask image: mmdebstrap --variant=essential {} + tracer {}", super::rootfs::SUITE, meta.revision))
                .build()?,
        ])
        .build()?;
    Ok(image.to_string()?.into_bytes())
}

/// Writes the archive at `out` from the layer blob at `layer_blob`.
pub fn write(out: &Path, meta: &Meta, layer: &Layer, layer_blob: &Path) -> Result<()> {
    let config = config(meta, layer)?;
    let config_digest = sha256(&config);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(MediaType::ImageConfig, config.len() as u64, config_digest.parse::<oci_spec::image::Digest>()?))
        .layers(vec![Descriptor::new(MediaType::ImageLayerGzip, layer.size, layer.digest.parse::<oci_spec::image::Digest>()?)])
        .annotations(meta.labels())
        .build()?
        .to_string()?
        .into_bytes();
    let manifest_digest = sha256(&manifest);
    let mut desc = Descriptor::new(MediaType::ImageManifest, manifest.len() as u64, manifest_digest.parse::<oci_spec::image::Digest>()?);
    desc.set_platform(Some(PlatformBuilder::default().architecture(Arch::Amd64).os(Os::Linux).build()?));
    desc.set_annotations(Some(HashMap::from([
        (ANNOTATION_REF_NAME.to_string(), meta.version.clone()),
        (CONTAINERD_NAME.to_string(), format!("docker.io/library/{}", meta.tag())),
    ])));
    let index = ImageIndexBuilder::default().schema_version(2u32).media_type(MediaType::ImageIndex).manifests(vec![desc]).build()?;
    let layout = OciLayoutBuilder::default().image_layout_version("1.0.0".to_string()).build()?;
    // Docker's own index of the archive (`docker save`'s manifest.json): no crate models it.
    let docker = serde_json::to_vec(&serde_json::json!([{
        "Config": blob_path(&config_digest),
        "RepoTags": [meta.tag()],
        "Layers": [blob_path(&layer.digest)],
    }]))?;

    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0);
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        tar.append_data(&mut h, dir, std::io::empty())?;
    }
    let mut add = |path: &str, bytes: &[u8]| -> Result<()> {
        let mut h = header(bytes.len() as u64);
        tar.append_data(&mut h, path, bytes)?;
        Ok(())
    };
    add("oci-layout", layout.to_string()?.as_bytes())?;
    add("index.json", index.to_string()?.as_bytes())?;
    add("manifest.json", &docker)?;
    add(&blob_path(&config_digest), &config)?;
    add(&blob_path(&manifest_digest), &manifest)?;
    let mut blob = File::open(layer_blob)?;
    let mut h = header(layer.size);
    tar.append_data(&mut h, blob_path(&layer.digest), &mut blob)?;
    tar.into_inner()?.flush()?;
    Ok(())
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h
}
