//! Golden vectors: the exact bytes and CIDs of a few blocks, so the format cannot drift
//! silently, cross-checked with an independent CBOR decoder (ciborium) and an independent
//! SHA-256 (hmac-sha256).

use ciborium::Value as Cbor;
use hypha_crdt::{Author, Replica, SigningKey, VerifiedBlock, parse_sdl};
use serde_json::json;

struct Golden {
    name: &'static str,
    hex: &'static str,
    cid: &'static str,
}

fn blocks() -> Vec<(&'static str, VerifiedBlock)> {
    let schema = parse_sdl(
        "hypha",
        "type Users { name: String age: Int points: Int @crdt(type: pncounter) }",
    )
    .unwrap();
    let mut unsigned = Replica::new(schema.clone(), Author::unsigned([1; 32]));
    let (doc, genesis) = unsigned
        .create("Users", &json!({"name": "John", "age": 21, "points": 0}))
        .unwrap();
    let update = unsigned.update(doc, &json!({"age": 60})).unwrap();
    let increment = unsigned.update(doc, &json!({"points": 45})).unwrap();
    let delete = unsigned.delete(doc).unwrap();
    let mut signed = Replica::new(schema, Author::signing(SigningKey::from_bytes(&[7; 32])));
    let (_, signed_genesis) = signed.create("Users", &json!({"name": "Ann"})).unwrap();
    vec![
        ("genesis", genesis),
        ("update", update),
        ("increment", increment),
        ("delete", delete),
        ("signed_genesis", signed_genesis),
    ]
}

const GOLDEN: &[Golden] = &[
    Golden {
        name: "genesis",
        hex: "a26564656c7461a665646f63494478286261652d66336666653561362d363430632d356239642d623432392d613732356232616432363639666669656c6473a363616765a36463726474636c77776576616c756515687072696f7269747901646e616d65a36463726474636c77776576616c7565644a6f686e687072696f726974790166706f696e7473a3646372647469706e636f756e746572656e6f6e6365006576616c7565006673746174757366616374697665687072696f72697479016a636f6c6c656374696f6e58240155122014e3d34c24ada3d966dd4933bf37b0c4d5a1253a49a1aa251287b70e2861ee336d736368656d6156657273696f6e582401711220c1323bccd3acc13f514bc1ad9e6f514fdc6868b37c36f932864d69de3701cbb065686561647380",
        cid: "bafyreihub3hyfronc56aptasrzt3xlb64w76qqctet6vpvtvod73fdpbte",
    },
    Golden {
        name: "update",
        hex: "a26564656c7461a665646f63494478286261652d66336666653561362d363430632d356239642d623432392d613732356232616432363639666669656c6473a163616765a36463726474636c77776576616c7565183c687072696f72697479026673746174757366616374697665687072696f72697479026a636f6c6c656374696f6e58240155122014e3d34c24ada3d966dd4933bf37b0c4d5a1253a49a1aa251287b70e2861ee336d736368656d6156657273696f6e582401711220c1323bccd3acc13f514bc1ad9e6f514fdc6868b37c36f932864d69de3701cbb065686561647381d82a58250001711220f40ecf82c5cd177c07cc128e67bbac3ee5bfe8405324fd57d67570ffb28de199",
        cid: "bafyreihbrnrs35usk7gk5xzlgca4vnbld4bcfkg55fjf46n4q7bcu37wba",
    },
    Golden {
        name: "increment",
        hex: "a26564656c7461a665646f63494478286261652d66336666653561362d363430632d356239642d623432392d613732356232616432363639666669656c6473a166706f696e7473a3646372647469706e636f756e746572656e6f6e63651b1267c212fa828e9e6576616c7565182d6673746174757366616374697665687072696f72697479036a636f6c6c656374696f6e58240155122014e3d34c24ada3d966dd4933bf37b0c4d5a1253a49a1aa251287b70e2861ee336d736368656d6156657273696f6e582401711220c1323bccd3acc13f514bc1ad9e6f514fdc6868b37c36f932864d69de3701cbb065686561647381d82a58250001711220e18b632df69257ccaedf2b3081cab42b1f0222a8dde9525e79bc87c22a6ff608",
        cid: "bafyreigmalnz7or652x6hfsprewqr2g2rdl4reboc4xrok7nw4uxiggy2a",
    },
    Golden {
        name: "delete",
        hex: "a26564656c7461a665646f63494478286261652d66336666653561362d363430632d356239642d623432392d613732356232616432363639666669656c6473a0667374617475736764656c65746564687072696f72697479046a636f6c6c656374696f6e58240155122014e3d34c24ada3d966dd4933bf37b0c4d5a1253a49a1aa251287b70e2861ee336d736368656d6156657273696f6e582401711220c1323bccd3acc13f514bc1ad9e6f514fdc6868b37c36f932864d69de3701cbb065686561647381d82a58250001711220cc02db9fba3eeeafe3964f892d08e8da88d7c8902e172f172bedb7297418d8d0",
        cid: "bafyreihrcxjhlzd4zj2ibdgshmmisrraovlc45unegb5wpwlkcp55hhl4a",
    },
    Golden {
        name: "signed_genesis",
        hex: "a46564656c7461a665646f63494478286261652d36616530303837612d643563612d356430382d383236312d326239316139623061333039666669656c6473a1646e616d65a36463726474636c77776576616c756563416e6e687072696f72697479016673746174757366616374697665687072696f72697479016a636f6c6c656374696f6e58240155122014e3d34c24ada3d966dd4933bf37b0c4d5a1253a49a1aa251287b70e2861ee336d736368656d6156657273696f6e582401711220c1323bccd3acc13f514bc1ad9e6f514fdc6868b37c36f932864d69de3701cbb06568656164738066617574686f725820ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c697369676e617475726558402866edf96fc0d40ba937ae9b4fe749b8a0c73e4a05aa3a331037a8619d6239f62bd5499eb84edf419a95faec4cb0e10cca2b0f2e9b28b1351e3436f28216490f",
        cid: "bafyreiczffch4dwjmlpydf4gz6uzpcfrylsu4liqr5ru273a4fv4ywa24a",
    },
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn blocks_match_golden_vectors() {
    let blocks = blocks();
    // To regenerate after a deliberate format change (which also needs a version bump):
    // print `Golden { name, hex: hex(block.bytes()), cid: block.cid().to_string() }` for each.
    assert_eq!(blocks.len(), GOLDEN.len());
    for ((name, block), golden) in blocks.iter().zip(GOLDEN) {
        assert_eq!(*name, golden.name);
        assert_eq!(hex(block.bytes()), golden.hex, "{name}: bytes drifted");
        assert_eq!(block.cid().to_string(), golden.cid, "{name}: CID drifted");
    }
}

#[test]
fn golden_vectors_decode_and_verify() {
    for golden in GOLDEN {
        let bytes = unhex(golden.hex);
        let cid = golden.cid.parse().unwrap();
        let block = VerifiedBlock::decode(&bytes, Some(&cid)).unwrap();
        assert_eq!(block.bytes(), &bytes[..], "{}", golden.name);
    }
}

#[test]
fn independent_sha256_matches_the_cid() {
    for golden in GOLDEN {
        let bytes = unhex(golden.hex);
        let cid: hypha_crdt::Cid = golden.cid.parse().unwrap();
        assert_eq!(cid.codec(), 0x71, "dag-cbor");
        assert_eq!(cid.hash().code(), 0x12, "sha2-256");
        assert_eq!(
            cid.hash().digest(),
            hmac_sha256::Hash::hash(&bytes),
            "{}",
            golden.name
        );
    }
}

/// Decodes each block with ciborium, a generic CBOR library that knows nothing of IPLD, and
/// checks the DAG-CBOR rules: canonical (length-first) key order, links as tag 42 over
/// 0x00-prefixed CID bytes, and that a plain re-encoding gives back the same bytes (minimal
/// integer and length headers, definite lengths).
#[test]
fn independent_cbor_decoder_agrees() {
    for golden in GOLDEN {
        let bytes = unhex(golden.hex);
        let value: Cbor = ciborium::from_reader(&bytes[..]).unwrap();
        let mut again = Vec::new();
        ciborium::into_writer(&value, &mut again).unwrap();
        assert_eq!(again, bytes, "{}: not minimal/definite CBOR", golden.name);
        check_canonical_maps(&value);
        let top = value.as_map().unwrap();
        let keys: Vec<&str> = top.iter().map(|(k, _)| k.as_text().unwrap()).collect();
        if golden.name.starts_with("signed") {
            assert_eq!(keys, ["delta", "heads", "author", "signature"]);
        } else {
            assert_eq!(keys, ["delta", "heads"]);
        }
        let heads = top
            .iter()
            .find(|(k, _)| k.as_text() == Some("heads"))
            .unwrap()
            .1
            .as_array()
            .unwrap();
        for head in heads {
            let Cbor::Tag(42, inner) = head else {
                panic!("a head is not a tag-42 link")
            };
            let link = inner.as_bytes().unwrap();
            assert_eq!(link[0], 0, "multibase identity prefix");
            let cid = hypha_crdt::Cid::try_from(&link[1..]).unwrap();
            assert_eq!(cid.codec(), 0x71);
        }
    }
    // The update names the genesis block as its only parent.
    let update = ciborium::from_reader::<Cbor, _>(&unhex(GOLDEN[1].hex)[..]).unwrap();
    let heads = &update.as_map().unwrap()[1].1;
    let Cbor::Tag(42, link) = &heads.as_array().unwrap()[0] else {
        panic!()
    };
    let parent = hypha_crdt::Cid::try_from(&link.as_bytes().unwrap()[1..]).unwrap();
    assert_eq!(parent.to_string(), GOLDEN[0].cid);
}

fn check_canonical_maps(value: &Cbor) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Cbor::Map(entries) => {
                let keys: Vec<&str> = entries
                    .iter()
                    .map(|(k, _)| k.as_text().expect("text keys"))
                    .collect();
                let mut sorted = keys.clone();
                sorted.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
                assert_eq!(keys, sorted, "map keys not in DAG-CBOR order");
                stack.extend(entries.iter().map(|(_, v)| v));
            }
            Cbor::Array(items) => stack.extend(items),
            Cbor::Tag(_, inner) => stack.push(inner),
            Cbor::Float(_) => panic!("no floats in these vectors"),
            _ => {}
        }
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
