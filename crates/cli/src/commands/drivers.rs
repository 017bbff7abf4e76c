//! `lab drivers`: the built-in drivers and the external ones on PATH, with their settings.

use futures_util::future::join_all;
use lab_core::driver::registry;
use lab_core::external;
use lab_core::{Error, Result};
use serde_json::json;

use crate::args::Output;
use crate::output::table;

/// Built-in drivers, then external ones found on PATH with where each is. An external driver
/// that cannot be used (its handshake fails, it speaks another protocol version, a built-in
/// driver has its name) is listed with the reason; the others are listed all the same.
pub(super) async fn drivers(output: Output, long: bool) -> Result<i32> {
    let map = registry()?;
    let mut rows: Vec<serde_json::Value> = map
        .values()
        .map(|r| {
            json!({
                "name": r.name, "from": "built-in", "description": r.description, "usable": true, "error": null,
                "options": r.options,
            })
        })
        .collect();
    let programs = external::on_path();
    let hellos = join_all(programs.iter().map(|p| async move {
        if map.contains_key(p.name.as_str()) {
            return Err(format!("not used: the built-in driver {:?} has this name", p.name));
        }
        p.describe(external::DESCRIBE_TIMEOUT).await.map_err(|e| e.to_string())
    }))
    .await;
    for (p, hello) in programs.iter().zip(hellos) {
        rows.push(match hello {
            Ok(h) => json!({
                "name": p.name, "from": p.path, "description": h.description, "usable": true, "error": null,
                "capabilities": h.capabilities, "options": h.options,
            }),
            Err(why) => json!({ "name": p.name, "from": p.path, "description": null, "usable": false, "error": why }),
        });
    }
    if output == Output::Json {
        outln!("{}", serde_json::to_string_pretty(&rows).map_err(|e| Error::op_caused("print the drivers", e))?)?;
        return Ok(0);
    }
    let cell = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let what = match r["error"].as_str() {
                Some(why) => format!("unusable: {why}"),
                None => cell(&r["description"]),
            };
            vec![cell(&r["name"]), cell(&r["from"]), what]
        })
        .collect();
    out!("{}", table(&["DRIVER", "FROM", "DESCRIPTION"], &table_rows))?;
    if long {
        // Every setting of each driver's table, as the driver declares it.
        for r in rows.iter().filter(|r| r["options"].as_array().is_some_and(|o| !o.is_empty())) {
            outln!("\n{} settings ([drivers.{}]):", cell(&r["name"]), cell(&r["name"]))?;
            let option_rows: Vec<Vec<String>> = r["options"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    // Built-in drivers declare {key, flag, kind: {type, choices}}; external ones
                    // {name, type} in the protocol's handshake.
                    let kind = match o["kind"]["choices"].as_array() {
                        Some(c) => c.iter().map(cell).collect::<Vec<_>>().join("|"),
                        None if o["kind"].is_object() => cell(&o["kind"]["type"]),
                        None => cell(&o["type"]),
                    };
                    let mut help = cell(&o["help"]);
                    for note in ["repeatable", "secret"] {
                        if o[note].as_bool() == Some(true) {
                            help.push_str(&format!(" ({note})"));
                        }
                    }
                    let flag = o["flag"].as_str().map(|f| format!("--{f}")).unwrap_or_else(|| "-".into());
                    let key = if o["key"].is_string() { cell(&o["key"]) } else { cell(&o["name"]) };
                    vec![format!("  {key}"), flag, kind, help]
                })
                .collect();
            out!("{}", table(&["  KEY", "FLAG", "TYPE", "HELP"], &option_rows))?;
        }
    }
    Ok(0)
}
