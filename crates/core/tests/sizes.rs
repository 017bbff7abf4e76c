//! Every crate's source stays walkable: no file in `crates/*/src` holds more than 800 lines
//! of code outside its tests, no function runs to 120 lines, and a function past 80 lines says
//! in its doc comment why it is one function, in a paragraph that opens `Why it is long:`
//! (STYLE.md, convention 11). Run alone, with the longest printed:
//! `cargo test -p lab-core --test sizes -- --nocapture`.
//!
//! Test code is left out: a file that a `#[cfg(test)] mod x;` names (and every module below
//! it), a `#[cfg(test)]` item, and a `#[test]` function. A function's lines run from its `fn`
//! to its closing brace, its doc comment left out. Read with `syn`, as `module_graph.rs` does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

const MAX_FILE: usize = 800;
const MAX_FN: usize = 120;
const EXPLAIN_FN: usize = 80;
const REASON: &str = "Why it is long:";

fn has_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.meta.require_list().is_ok_and(|l| l.tokens.to_string() == "test"))
}

fn is_test_fn(attrs: &[syn::Attribute]) -> bool {
    has_cfg_test(attrs) || attrs.iter().any(|a| a.path().segments.last().is_some_and(|s| s.ident == "test"))
}

fn doc(attrs: &[syn::Attribute]) -> String {
    let mut out = String::new();
    for a in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let syn::Meta::NameValue(nv) = &a.meta {
            if let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value {
                out.push_str(&s.value());
                out.push('\n');
            }
        }
    }
    out
}

/// One function too long, or long without a reason.
struct Long {
    at: String,
    lines: usize,
    explained: bool,
}

/// Collects the functions of one file, and the lines its test items take.
struct Walk<'a> {
    file: &'a str,
    fns: Vec<Long>,
    test_lines: BTreeSet<usize>,
}

impl Walk<'_> {
    fn function(
        &mut self,
        name: &syn::Ident,
        attrs: &[syn::Attribute],
        fn_token: proc_macro2::Span,
        end: proc_macro2::Span,
    ) {
        let lines = end.end().line - fn_token.start().line + 1;
        let explained = doc(attrs).contains(REASON);
        self.fns.push(Long { at: format!("{}:{} {name}", self.file, fn_token.start().line), lines, explained });
    }

    fn test_item(&mut self, span: proc_macro2::Span) {
        self.test_lines.extend(span.start().line..=span.end().line);
    }
}

impl<'ast> Visit<'ast> for Walk<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if has_cfg_test(&m.attrs) {
            self.test_item(m.span());
        } else {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if is_test_fn(&f.attrs) {
            self.test_item(f.span());
            return;
        }
        self.function(&f.sig.ident, &f.attrs, f.sig.fn_token.span, f.block.brace_token.span.close());
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if has_cfg_test(&f.attrs) {
            self.test_item(f.span());
            return;
        }
        self.function(&f.sig.ident, &f.attrs, f.sig.fn_token.span, f.block.brace_token.span.close());
        syn::visit::visit_impl_item_fn(self, f);
    }
    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.function(&f.sig.ident, &f.attrs, f.sig.fn_token.span, block.brace_token.span.close());
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if has_cfg_test(&i.attrs) {
            self.test_item(i.span());
        } else {
            syn::visit::visit_item_impl(self, i);
        }
    }
}

/// The files a module file declares as its children (`mod x;`), and whether under
/// `#[cfg(test)]`. A `mod.rs`, `lib.rs` or `main.rs` keeps its children beside it; `a.rs`
/// keeps them in `a/`.
fn children(path: &Path, ast: &syn::File) -> Vec<(PathBuf, bool)> {
    let stem = path.file_stem().unwrap().to_string_lossy();
    let dir = path.parent().unwrap();
    let dir = if matches!(stem.as_ref(), "mod" | "lib" | "main") { dir.to_path_buf() } else { dir.join(stem.as_ref()) };
    let mut out = Vec::new();
    for item in &ast.items {
        let syn::Item::Mod(m) = item else { continue };
        if m.content.is_some() {
            continue;
        }
        let explicit = m.attrs.iter().find(|a| a.path().is_ident("path")).and_then(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => {
                    Some(path.parent().unwrap().join(s.value()))
                }
                _ => None,
            },
            _ => None,
        });
        let name = m.ident.to_string();
        let file = explicit.unwrap_or_else(|| {
            let flat = dir.join(format!("{name}.rs"));
            if flat.exists() {
                flat
            } else {
                dir.join(&name).join("mod.rs")
            }
        });
        out.push((file, has_cfg_test(&m.attrs)));
    }
    out
}

/// A file's lines outside its tests, and its functions.
fn measure(name: &str, text: &str, ast: &syn::File) -> (usize, Vec<Long>) {
    let mut walk = Walk { file: name, fns: Vec::new(), test_lines: BTreeSet::new() };
    walk.visit_file(ast);
    (text.lines().count() - walk.test_lines.len(), walk.fns)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_source_file_or_function_is_too_long_to_read() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let root = crates.parent().unwrap().to_path_buf();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let parsed: BTreeMap<PathBuf, (String, syn::File)> = files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, (text, ast))
        })
        .collect();
    // Test files: those a `#[cfg(test)] mod` names, and everything below them.
    let mut test_files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut queue: Vec<PathBuf> = Vec::new();
    for (p, (_, ast)) in &parsed {
        queue.extend(children(p, ast).into_iter().filter(|c| c.1).map(|c| c.0));
    }
    while let Some(p) = queue.pop() {
        if let Some((_, ast)) = parsed.get(&p) {
            if test_files.insert(p.clone()) {
                queue.extend(children(&p, ast).into_iter().map(|c| c.0));
            }
        }
    }

    let mut problems = Vec::new();
    let mut longest_files = Vec::new();
    let mut fns = Vec::new();
    for (p, (text, ast)) in parsed.iter().filter(|(p, _)| !test_files.contains(*p)) {
        let name = p.strip_prefix(&root).unwrap().display().to_string();
        let (code, found) = measure(&name, text, ast);
        if code > MAX_FILE {
            problems.push(format!("{name}: {code} lines outside its tests; at most {MAX_FILE}"));
        }
        longest_files.push((code, name.clone()));
        fns.extend(found);
    }
    for f in &fns {
        if f.lines >= MAX_FN {
            problems.push(format!("{}: {} lines; a function stays under {MAX_FN}", f.at, f.lines));
        } else if f.lines > EXPLAIN_FN && !f.explained {
            problems.push(format!(
                "{}: {} lines, with no paragraph in its doc comment opening {REASON:?} to say why it is one function",
                f.at, f.lines
            ));
        }
    }
    longest_files.sort_by(|a, b| b.cmp(a));
    fns.sort_by_key(|f| std::cmp::Reverse(f.lines));
    println!("longest files (lines outside tests):");
    for (n, f) in longest_files.iter().take(5) {
        println!("  {n:5} {f}");
    }
    println!("longest functions:");
    for f in fns.iter().take(10) {
        println!("  {:5} {}{}", f.lines, f.at, if f.explained { " (says why)" } else { "" });
    }
    assert!(problems.is_empty(), "too long to read:\n{}", problems.join("\n"));
}

/// The measure itself, on a made-up file: without line numbers (proc-macro2's
/// `span-locations`) every function would measure one line and the check above would pass
/// whatever the source.
#[test]
fn the_measure_counts_a_functions_lines_and_leaves_tests_out() {
    let body = "    let x = 1;\n".repeat(100);
    let text = format!(
        "/// Short.\nfn short() {{}}\n\n/// Long.\n///\n/// Why it is long: a test.\nfn long() {{\n{body}}}\n\n\
         impl S {{\n    fn method(&self) {{\n{body}    }}\n}}\n\n#[cfg(test)]\nmod tests {{\n    fn helper() {{\n{body}    }}\n}}\n"
    );
    let ast = syn::parse_file(&text).unwrap();
    let (code, fns) = measure("made-up.rs", &text, &ast);
    let found: Vec<(String, usize, bool)> = fns.iter().map(|f| (f.at.clone(), f.lines, f.explained)).collect();
    assert_eq!(
        found,
        [
            ("made-up.rs:2 short".to_string(), 1, false),
            ("made-up.rs:7 long".to_string(), 102, true),
            ("made-up.rs:111 method".to_string(), 102, false),
        ]
    );
    assert_eq!(code, text.lines().count() - 105, "the test module's 105 lines are left out");
}
