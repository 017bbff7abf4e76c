//! lab-core's modules depend on each other without a circle, and its areas (its top-level
//! folders) stand in layers, each depending only on the ones below it (`docs/architecture.md`
//! names them). Run alone, with the layers printed:
//! `cargo test -p lab-core --test module_graph -- --nocapture`.
//!
//! The graph is read from the source with `syn`, not from the compiler: a module depends on
//! another when its code, tests left out, names an item the other defines, through a `use`
//! or a path (`crate::registry::deploy`, `super::wire::Hello`, or `registry::deploy` after
//! `use crate::registry`). Names are followed through re-exports to where they are defined,
//! so a folder's `mod.rs` that only re-exports what is below it stands between nothing. Why not
//! `cargo modules dependencies --acyclic`: it checks items, where a type and its own methods
//! already form a circle, and it takes minutes to install.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module's path below the crate, `[]` for the crate root.
type ModPath = Vec<String>;

/// What one source file says: the module it is, the names it imports (alias to absolute
/// path), what it re-exports, the items it defines, and every path its code names.
#[derive(Default)]
struct File {
    imports: BTreeMap<String, Vec<String>>,
    reexports: BTreeMap<String, Vec<String>>,
    items: BTreeSet<String>,
    paths: Vec<Vec<String>>,
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.meta.require_list().is_ok_and(|l| l.tokens.to_string().contains("test")))
}

/// Flattens a use tree into (alias, path) pairs; a glob keeps `*` as its alias.
fn flatten(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                out.push((prefix.last().cloned().unwrap_or_default(), prefix.clone()));
            } else {
                let mut p = prefix.clone();
                p.push(name.clone());
                out.push((name, p));
            }
        }
        syn::UseTree::Rename(r) => {
            let mut p = prefix.clone();
            p.push(r.ident.to_string());
            out.push((r.rename.to_string(), p));
        }
        syn::UseTree::Glob(_) => out.push(("*".into(), prefix.clone())),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| flatten(t, prefix, out)),
    }
}

/// Collects the paths named in code, outside test modules and items.
struct Paths<'a>(&'a mut Vec<Vec<String>>);

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.0.push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }
    fn visit_item_use(&mut self, _: &'ast syn::ItemUse) {}
    // `pub(super)` names a module, and uses nothing of it.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}
}

fn read(path: &Path) -> File {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut f = File::default();
    for item in &ast.items {
        let (attrs, name) = match item {
            syn::Item::Const(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Enum(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Fn(i) => (&i.attrs, Some(i.sig.ident.to_string())),
            syn::Item::Static(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Struct(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Trait(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Type(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Macro(i) => (&i.attrs, i.ident.as_ref().map(|i| i.to_string())),
            syn::Item::Mod(i) => (&i.attrs, None),
            syn::Item::Use(i) => (&i.attrs, None),
            _ => (&Vec::new(), None),
        };
        if is_test(attrs) {
            continue;
        }
        if let Some(name) = name {
            f.items.insert(name);
        }
        if let syn::Item::Use(u) = item {
            let mut pairs = Vec::new();
            flatten(&u.tree, &mut Vec::new(), &mut pairs);
            let public = !matches!(u.vis, syn::Visibility::Inherited);
            for (alias, path) in pairs {
                if public {
                    f.reexports.insert(alias.clone(), path.clone());
                }
                f.imports.insert(alias, path);
            }
        }
    }
    Paths(&mut f.paths).visit_file(&ast);
    f
}

/// Every `.rs` file below `src`, as the module it is.
fn modules(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            out.insert(parts, p);
        }
    }
    out
}

struct Graph {
    files: BTreeMap<ModPath, File>,
}

impl Graph {
    /// An absolute path (below the crate) made of `path` as written in module `at`.
    fn absolute(&self, at: &ModPath, path: &[String]) -> Option<Vec<String>> {
        self.absolute_from(at, path, 0)
    }

    fn absolute_from(&self, at: &ModPath, path: &[String], depth: usize) -> Option<Vec<String>> {
        let first = path.first()?;
        if depth > 16 {
            return None;
        }
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => at.clone(),
            "super" => {
                let mut b = at.clone();
                let mut rest = path;
                while rest.first().map(String::as_str) == Some("super") {
                    b.pop();
                    rest = &rest[1..];
                }
                return Some(b.into_iter().chain(rest.iter().cloned()).collect());
            }
            name => {
                // An imported name, or a child module of this one.
                let file = self.files.get(at)?;
                if let Some(target) = file.imports.get(name) {
                    // An external crate's name (`pub use bollard;`) leads nowhere here.
                    if target.len() == 1 && target[0] == name {
                        return None;
                    }
                    let target = self.absolute_from(at, target, depth + 1)?;
                    return Some(target.into_iter().chain(path[1..].iter().cloned()).collect());
                }
                let mut child = at.clone();
                child.push(name.to_string());
                if self.files.contains_key(&child) {
                    return Some(child.into_iter().chain(path[1..].iter().cloned()).collect());
                }
                return None;
            }
        };
        base.extend(path[1..].iter().cloned());
        Some(base)
    }

    /// The module that defines what `path` (absolute) names, following re-exports.
    fn definer(&self, path: &[String], depth: usize) -> Option<ModPath> {
        if depth > 16 {
            return None;
        }
        // The longest prefix that is a module.
        let mut m = path.to_vec();
        while !m.is_empty() && !self.files.contains_key(&m) {
            m.pop();
        }
        if !self.files.contains_key(&m) {
            return None;
        }
        let Some(next) = path.get(m.len()) else { return Some(m) };
        let file = &self.files[&m];
        if file.items.contains(next) {
            return Some(m);
        }
        if let Some(target) = file.reexports.get(next) {
            let target = self.absolute(&m, target)?;
            return self.definer(
                &target.into_iter().chain(path[m.len() + 1..].iter().cloned()).collect::<Vec<_>>(),
                depth + 1,
            );
        }
        Some(m)
    }

    /// Module-to-module dependencies: what each module's code names, leaving out its own
    /// re-exports (`pub use`) and its uses of itself. `MODULE_GRAPH_WHY=MODULE` prints why
    /// that module depends on each other one.
    fn edges(&self) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
        let mut out: BTreeMap<ModPath, BTreeSet<ModPath>> =
            self.files.keys().map(|k| (k.clone(), BTreeSet::new())).collect();
        for (at, file) in &self.files {
            let reexported: BTreeSet<&Vec<String>> = file.reexports.values().collect();
            let named = file.imports.values().filter(|p| !reexported.contains(p)).chain(file.paths.iter());
            for p in named {
                let Some(abs) = self.absolute(at, p) else { continue };
                let Some(def) = self.definer(&abs, 0) else { continue };
                if &def != at {
                    if std::env::var("MODULE_GRAPH_WHY").is_ok_and(|w| w == name(at)) {
                        println!("{} -> {} by {}", name(at), name(&def), p.join("::"));
                    }
                    out.get_mut(at).unwrap().insert(def);
                }
            }
        }
        out
    }
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "lab_core".into()
    } else {
        m.join("::")
    }
}

/// The strongly connected components with more than one member (Tarjan).
fn circles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct T<'a> {
        g: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn strong<'a>(t: &mut T<'a>, v: &'a ModPath) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        for w in &t.g[v] {
            if !t.index.contains_key(w) {
                strong(t, w);
                let lw = t.low[w];
                t.low.entry(v).and_modify(|l| *l = (*l).min(lw));
            } else if t.stack.contains(&w) {
                let iw = t.index[w];
                t.low.entry(v).and_modify(|l| *l = (*l).min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T { g: graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), out: Vec::new() };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            strong(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_cores_modules_have_no_circle_and_its_areas_stand_in_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = Graph { files: modules(&src).into_iter().map(|(m, p)| (m, read(&p))).collect() };
    let edges = graph.edges();
    let found = circles(&edges);
    let mut report = String::new();
    for c in &found {
        report.push_str(&format!("circle: {}\n", c.iter().map(name).collect::<Vec<_>>().join(", ")));
        for a in c {
            for b in edges[a].iter().filter(|b| c.contains(b)) {
                report.push_str(&format!("    {} -> {}\n", name(a), name(b)));
            }
        }
    }
    assert!(found.is_empty(), "lab-core's modules depend on each other in a circle:\n{report}");

    // The areas: the crate's top-level modules, in layers.
    let mut areas: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, deps) in &edges {
        let Some(area) = a.first() else { continue };
        let entry = areas.entry(area.clone()).or_default();
        for d in deps {
            if let Some(other) = d.first().filter(|o| *o != area) {
                entry.insert(other.clone());
            }
        }
    }
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut layers = Vec::new();
    while placed.len() < areas.len() {
        let layer: Vec<String> = areas
            .iter()
            .filter(|(a, d)| !placed.contains(*a) && d.is_subset(&placed))
            .map(|(a, _)| a.clone())
            .collect();
        let stuck: Vec<String> = areas
            .iter()
            .filter(|(a, _)| !placed.contains(*a))
            .map(|(a, d)| format!("{a} -> {}", d.difference(&placed).cloned().collect::<Vec<_>>().join(", ")))
            .collect();
        assert!(!layer.is_empty(), "lab-core's areas depend on each other in a circle:\n{}", stuck.join("\n"));
        placed.extend(layer.iter().cloned());
        layers.push(layer);
    }
    println!("{} modules, {} dependencies, no circle", edges.len(), edges.values().map(BTreeSet::len).sum::<usize>());
    for (i, layer) in layers.iter().enumerate() {
        println!("layer {i}: {}", layer.join(", "));
    }
}
