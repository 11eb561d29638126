//! `cargo xtask layers`: no import circles between a crate's modules. Data flows one way
//! (kernel event -> decode -> correlate -> render/record), and each crate's modules form
//! layers; a module that imports one that imports it back (directly or round a longer loop)
//! fails the check, named with its loop. A child module may use its parent's items.
//!
//! Read from the source as text: `use crate::...`, `use super::...` and `crate::x::` /
//! `super::x::` paths in code (comments and `#[cfg(test)] mod tests` left out).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// The crates whose module graphs are checked.
const CRATES: [&str; 4] = [
    "dockflow-common/src",
    "dockflow-ebpf/src",
    "dockflow-core/src",
    "dockflow-user/src",
];

pub fn run() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut circles = Vec::new();
    for dir in CRATES {
        let sources = read_sources(&root.join(dir))?;
        for circle in find_circles(&graph(&sources)) {
            circles.push(format!("{dir}: {}", circle.join(" -> ")));
        }
    }
    if !circles.is_empty() {
        bail!("import circles:\n  {}", circles.join("\n  "));
    }
    println!("layers: no import circles in {}", CRATES.join(", "));
    Ok(())
}

/// (module path, source text) of every .rs file below `dir`, binaries left out.
fn read_sources(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files
        .into_iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "bin"))
        .map(|f| {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            Ok((module_of(dir, &f), text))
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// "path::correlate::open" for src/path/correlate/open.rs; "" for the crate root.
fn module_of(dir: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(dir).unwrap_or(file).with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|p| p != "mod" && p != "lib" && p != "main")
        .collect();
    parts.join("::")
}

/// Each module's imports of its crate's other modules (not of its own ancestors).
fn graph(sources: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&str> = sources.iter().map(|(m, _)| m.as_str()).collect();
    sources
        .iter()
        .map(|(module, text)| {
            let code = code_only(text);
            let deps = paths_in(&code)
                .filter_map(|path| resolve(module, &path))
                .filter_map(|parts| longest_module(&parts, &modules))
                .filter(|dep| {
                    !dep.is_empty() && dep != module && !module.starts_with(&format!("{dep}::"))
                })
                .collect();
            (module.clone(), deps)
        })
        .collect()
}

/// The text without line comments and without the unit tests' module.
fn code_only(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::`/`super::` path the code names, use trees expanded ("crate::a::{b, c::d}"
/// gives "crate::a::b" and "crate::a::c::d").
fn paths_in(code: &str) -> impl Iterator<Item = String> + '_ {
    let mut paths = Vec::new();
    let compact: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
    for start in ["crate::", "super::"] {
        let mut rest = compact.as_str();
        while let Some(at) = rest.find(start) {
            let tail = &rest[at..];
            let end = tree_end(tail);
            expand("", &tail[..end].replace(' ', ""), &mut paths);
            rest = &tail[start.len()..];
        }
    }
    paths.into_iter()
}

/// Where a path or use tree starting at `tail` ends.
fn tree_end(tail: &str) -> usize {
    let mut depth = 0;
    for (i, c) in tail.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => return i,
            _ => {}
        }
    }
    tail.len()
}

/// Expands one use tree into its paths.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(format!("{prefix}{tree}"));
        return;
    };
    let head = format!("{prefix}{}", &tree[..open]);
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut item = String::new();
    for c in inner.chars().chain([',']) {
        match c {
            ',' if depth == 0 => {
                if !item.is_empty() {
                    expand(&head, &std::mem::take(&mut item), out);
                }
            }
            '{' => {
                depth += 1;
                item.push(c);
            }
            '}' => {
                depth -= 1;
                item.push(c);
            }
            _ => item.push(c),
        }
    }
}

/// A `crate::`/`super::` path as module-path parts from the crate root, seen from `module`.
fn resolve(module: &str, path: &str) -> Option<Vec<String>> {
    let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    let mut base: Vec<&str> = match parts.first() {
        Some(&"crate") => Vec::new(),
        Some(&"super") => module.split("::").filter(|p| !p.is_empty()).collect(),
        _ => return None,
    };
    if parts[0] == "crate" {
        parts.remove(0);
    }
    while parts.first() == Some(&"super") {
        parts.remove(0);
        base.pop();
    }
    Some(base.into_iter().chain(parts).map(str::to_string).collect())
}

/// The longest module that `parts` starts with ("path::hop::Hop" -> "path::hop").
fn longest_module(parts: &[String], modules: &BTreeSet<&str>) -> Option<String> {
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m.as_str()))
}

/// Each import circle once, as the modules round it (the first repeated at the end).
fn find_circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<Vec<String>>,
    ) {
        stack.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(at) = stack.iter().position(|s| s == dep) {
                let mut circle = stack[at..].to_vec();
                circle.push(dep.clone());
                circles.push(circle);
            } else if !done.contains(dep) {
                visit(dep, graph, stack, done, circles);
            }
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let (mut done, mut circles) = (BTreeSet::new(), Vec::new());
    for node in graph.keys() {
        if !done.contains(node) {
            visit(node, graph, &mut Vec::new(), &mut done, &mut circles);
        }
    }
    circles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
        files
            .iter()
            .map(|(m, t)| (m.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn finds_a_circle_through_use_trees_and_super_paths() {
        let files = sources(&[
            ("", "mod path;"),
            ("path", "pub mod classify; pub mod hop;"),
            (
                "path::hop",
                "use super::{classify::{HopKind, Layer}};\nstruct Hop;",
            ),
            (
                "path::classify",
                "use crate::path::hop::Hop;\n// use crate::nowhere;",
            ),
        ]);
        let circles = find_circles(&graph(&files));
        assert_eq!(circles.len(), 1, "{circles:?}");
        assert!(circles[0].contains(&"path::hop".to_string()));
        assert!(circles[0].contains(&"path::classify".to_string()));
    }

    #[test]
    fn layers_and_a_child_using_its_parent_are_no_circle() {
        let files = sources(&[
            ("", "pub mod model; pub mod path;"),
            ("model", "pub struct Event;"),
            ("path", "pub mod correlate; pub struct Limits;"),
            (
                "path::correlate",
                "use super::Limits; use crate::model::Event;",
            ),
        ]);
        assert!(find_circles(&graph(&files)).is_empty());
    }
}
