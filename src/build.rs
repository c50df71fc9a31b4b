//! `deploy --build`: the app's image, built through the engine API from a
//! build context, tagged with the version it will answer as.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::context::Stack;
use crate::error::usage;
use crate::stack::{Color, Release};

/// The label on the images `deploy --build` makes: the project's name.
pub const BUILT_LABEL: &str = "cryptus.built-for";

/// Removes the images cryptus built for a project that no container uses:
/// both colors' images are in use, so what rollback needs stays.
pub async fn prune(stack: &Stack<'_>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for id in stack
        .engine
        .images_labelled(BUILT_LABEL, &stack.project.name)
        .await?
    {
        if stack.engine.remove_unused_image(&id).await? {
            removed.push(id);
        }
    }
    Ok(removed)
}

/// Directories never sent to the engine.
const SKIPPED: [&str; 2] = [".git", "target"];

/// What a build of `color` is made from, checked before anything is sent
/// to the engine: the same checks and names for the build and for what a
/// dry run says it would build.
pub struct Input {
    context: PathBuf,
    dockerfile: String,
    args: BTreeMap<String, String>,
    /// The repository the image is tagged in: the compose file's image's,
    /// else `<project>-app`.
    repository: String,
}

impl Input {
    /// The tag a build as `version` gets.
    pub fn tag(&self, version: &str) -> String {
        format!("{}:{version}", self.repository)
    }
}

/// The build `color` would run from `context` (the compose file's `build:`
/// when `None`), refused where there is no context or no Dockerfile.
pub fn input(stack: &Stack<'_>, color: Color, context: Option<PathBuf>) -> Result<Input> {
    let service = stack
        .compose
        .service(color.service())
        .with_context(|| format!("the compose file has no service {}", color.service()))?;
    let build = service.build.clone();
    let context = match (context, &build) {
        (Some(context), _) => context,
        (None, Some(build)) => stack.compose.working_dir.join(&build.context),
        (None, None) => {
            return Err(usage(
                format!("{} has no build: in the compose file", color.service()),
                "pass the context: cryptus deploy --build DIR",
            ));
        }
    };
    if !context.is_dir() {
        return Err(usage(
            format!("the build context {} is not a directory", context.display()),
            "pass the app's source directory: cryptus deploy --build DIR",
        ));
    }
    let dockerfile = build
        .as_ref()
        .and_then(|b| b.dockerfile.clone())
        .unwrap_or_else(|| "Dockerfile".to_owned());
    if !context.join(&dockerfile).is_file() {
        return Err(usage(
            format!("there is no {dockerfile} in {}", context.display()),
            "the build context must hold the Dockerfile",
        ));
    }
    let repository = service
        .image
        .as_deref()
        .map(repository_of)
        .unwrap_or_else(|| format!("{}-app", stack.project.name));
    Ok(Input {
        context,
        dockerfile,
        args: build.map(|b| b.args).unwrap_or_default(),
        repository,
    })
}

pub async fn build_color(
    stack: &Stack<'_>,
    color: Color,
    context: Option<PathBuf>,
    version: &str,
) -> Result<Release> {
    let input = input(stack, color, context)?;
    let tag = input.tag(version);
    let archive = tar_context(&input.context)?;
    let labels = BTreeMap::from([
        (
            "org.opencontainers.image.version".to_owned(),
            version.to_owned(),
        ),
        // cryptus prunes what it built once no container uses it.
        (BUILT_LABEL.to_owned(), stack.project.name.clone()),
    ]);
    stack
        .engine
        .build_image(archive, &input.dockerfile, &tag, labels, input.args)
        .await?;
    Ok(Release {
        image: tag,
        version: version.to_owned(),
    })
}

/// `registry:5000/team/app:tag` → `registry:5000/team/app`.
fn repository_of(reference: &str) -> String {
    let name = reference.split('@').next().unwrap_or(reference);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(colon) => name[..last_slash + colon].to_owned(),
        None => name.to_owned(),
    }
}

/// A tar of the build context, without `.git` and `target`.
fn tar_context(dir: &Path) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    add_dir(&mut builder, dir, Path::new(""))?;
    builder.into_inner().context("packing the build context")
}

fn add_dir(builder: &mut tar::Builder<Vec<u8>>, root: &Path, relative: &Path) -> Result<()> {
    let dir = root.join(relative);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let path = relative.join(&name);
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        if kind.is_dir() {
            builder
                .append_dir(&path, entry.path())
                .with_context(|| format!("packing {}", entry.path().display()))?;
            add_dir(builder, root, &path)?;
        } else {
            builder
                .append_path_with_name(entry.path(), &path)
                .with_context(|| format!("packing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        assert_eq!(repository_of("cryptus:latest"), "cryptus");
        assert_eq!(repository_of("cryptus"), "cryptus");
        assert_eq!(
            repository_of("localhost:5000/team/app:v2"),
            "localhost:5000/team/app"
        );
        assert_eq!(repository_of("localhost:5000/app"), "localhost:5000/app");
    }

    #[test]
    fn the_context_skips_git_and_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("target/debug")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(dir.path().join("target/debug/big"), "x").unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        let archive = tar_context(dir.path()).unwrap();
        let mut reader = tar::Archive::new(archive.as_slice());
        let names: Vec<String> = reader
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"Dockerfile".to_owned()), "{names:?}");
        assert!(names.contains(&"src/main.rs".to_owned()), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("target") || n.starts_with(".git")),
            "{names:?}"
        );
    }
}
