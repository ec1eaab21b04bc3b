//! The crate graph is the architecture: `docs/ARCHITECTURE.md` has a table
//! of perch's crates, bottom to top, each with the crates it may use. This
//! reads the workspace's real dependency graph (`cargo metadata`) and fails
//! on any edge the table does not allow, on any edge the table allows but
//! no crate has (the document went stale), on a crate missing from either
//! side, on a table whose crates use ones listed below them, and on a perch
//! dependency a crate declares but never names in its code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A perch package's name as the table writes it: `perch-store` → `store`,
/// the binary package `perch` stays `perch`.
fn short(package: &str) -> String {
    package
        .strip_prefix("perch-")
        .unwrap_or(package)
        .to_string()
}

struct Package {
    /// Where its sources are (`crates/<name>/src`, or `src` for the binary).
    src: PathBuf,
    /// perch crates it depends on (any kind: normal, dev, build), by short
    /// name, with the name its code uses for it.
    uses: BTreeMap<String, String>,
}

/// The workspace as cargo sees it.
fn workspace() -> BTreeMap<String, Package> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut packages = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let manifest = Path::new(p["manifest_path"].as_str().unwrap());
        let mut uses = BTreeMap::new();
        for d in p["dependencies"].as_array().unwrap() {
            // Workspace crates are the path dependencies.
            if d["path"].is_null() {
                continue;
            }
            let dep = d["name"].as_str().unwrap();
            let in_code = d["rename"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| dep.replace('-', "_"));
            uses.insert(short(dep), in_code);
        }
        packages.insert(
            short(name),
            Package {
                src: manifest.parent().unwrap().join("src"),
                uses,
            },
        );
    }
    packages
}

/// The table of ARCHITECTURE.md: crate → the crates it may use, in the
/// table's order (bottom first).
fn documented() -> Vec<(String, BTreeSet<String>)> {
    let text = std::fs::read_to_string(repo().join("docs/ARCHITECTURE.md")).unwrap();
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.first() == Some(&"crate") && cells.last() == Some(&"may use") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        if !line.trim_start().starts_with('|') {
            break;
        }
        if cells[0].starts_with("---") {
            continue;
        }
        let name = backticked(cells[0])
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no `crate` in the first cell of {line:?}"));
        rows.push((
            name,
            backticked(cells.last().unwrap()).into_iter().collect(),
        ));
    }
    assert!(
        !rows.is_empty(),
        "no `| crate | … | may use |` table in docs/ARCHITECTURE.md"
    );
    rows
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every `.rs` file's text under `dir`.
fn sources(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    text
}

#[test]
fn the_crate_graph_is_the_documented_one() {
    let actual = workspace();
    let table = documented();
    let mut problems = Vec::new();

    let mut below: BTreeSet<String> = BTreeSet::new();
    for (name, allowed) in &table {
        for a in allowed {
            if !below.contains(a) {
                problems.push(format!(
                    "ARCHITECTURE.md: `{name}` may use `{a}`, which is not listed below it"
                ));
            }
        }
        below.insert(name.clone());
        let Some(pkg) = actual.get(name) else {
            problems.push(format!(
                "ARCHITECTURE.md lists `{name}`, the workspace has no such crate"
            ));
            continue;
        };
        let used: BTreeSet<String> = pkg.uses.keys().cloned().collect();
        for extra in used.difference(allowed) {
            problems.push(format!(
                "`{name}` depends on `{extra}`, which ARCHITECTURE.md does not allow"
            ));
        }
        for unused in allowed.difference(&used) {
            problems.push(format!(
                "ARCHITECTURE.md lets `{name}` use `{unused}`, but it does not depend on it: update the table"
            ));
        }
    }
    for name in actual.keys() {
        if !table.iter().any(|(n, _)| n == name) {
            problems.push(format!(
                "crate `{name}` is missing from ARCHITECTURE.md's table"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_declared_perch_dependency_is_used_in_code() {
    let mut problems = Vec::new();
    for (name, pkg) in workspace() {
        let code = sources(&pkg.src);
        for (dep, in_code) in &pkg.uses {
            if !code.contains(&format!("{in_code}::")) {
                problems.push(format!(
                    "`{name}` declares `{dep}` in Cargo.toml but its code never names `{in_code}::`"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
