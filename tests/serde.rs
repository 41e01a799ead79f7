//! The `serde` feature: an operator's JSON dump of the state, read back and checked
//! field by field.

#![cfg(feature = "serde")]

use pinalloc::{Extent, ExtentAllocator, PinMode, PinOptions, Request, SharedAllocator};
use serde_json::{Value, json};

#[test]
fn the_state_dumps_as_json() -> Result<(), Box<dyn std::error::Error>> {
    let alloc = SharedAllocator::builder(64).groups(2).build();
    let e = alloc.allocate(Request::new(8))?;
    let pin = alloc
        .pin_with(
            Extent::new(2, 2),
            PinOptions::new().mode(PinMode::Blocking).owner(7),
        )?
        .into_id();
    let reader = alloc.begin_read();
    let dump = json!({
        "stats": alloc.stats(),
        "groups": alloc.group_stats(),
        "runs": alloc.runs(0..64).collect::<Vec<_>>(),
        "pins": alloc.pins(),
        "readers": alloc.readers(),
    });
    let text = serde_json::to_string_pretty(&dump)?;
    let back: Value = serde_json::from_str(&text)?;
    assert_eq!(back["stats"]["space"]["allocated_blocks"], 8);
    assert_eq!(
        back["stats"]["space"]["free_histogram"]
            .as_array()
            .map(Vec::len),
        Some(64)
    );
    assert_eq!(back["groups"].as_array().map(Vec::len), Some(2));
    assert_eq!(back["runs"][1]["extent"], json!({"start": 2, "len": 2}));
    assert_eq!(back["runs"][1]["state"], "Allocated");
    assert_eq!(back["runs"][1]["pins"], 1);
    assert_eq!(back["pins"][0]["mode"], "Blocking");
    assert_eq!(back["pins"][0]["owner"], 7);
    assert_eq!(back["readers"][0]["epoch"], 1);
    alloc.end_read(reader)?;
    alloc.unpin(pin)?;
    alloc.free(e)?;
    Ok(())
}

#[test]
fn an_extent_reads_back() -> Result<(), serde_json::Error> {
    let e = Extent::new(u64::MAX - 1, 1);
    let text = serde_json::to_string(&e)?;
    assert_eq!(serde_json::from_str::<Extent>(&text)?, e);
    let core = ExtentAllocator::new(8);
    let runs: Vec<_> = core.runs(0..8).collect();
    assert_eq!(
        serde_json::to_value(&runs)?,
        json!([{"extent": {"start": 0, "len": 8}, "state": "Free", "pins": 0,
                "freed_in": null, "awaiting_commit": false, "reader_held": false}])
    );
    Ok(())
}
