//! People: the unknown faces of a collection grouped, named, merged, split and rejected
//! through the API, each outcome checked against the photos' labelled identities.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use facerec_testkit::{Reply, batch_results, eval_dir, eval_rows, http};
use serde_json::{Value, json};

use crate::workload::{Server, python_tar};

const AT: &str = "/v1/collections/people";

/// Each group's faces, by group id: (seen id, labelled identity).
type Groups = BTreeMap<i64, Vec<(i64, String)>>;

fn get(addr: &str, path: &str) -> Reply {
    http(addr, "GET", path, &[], b"")
}

fn post(addr: &str, path: &str, body: &Value) -> Reply {
    http(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// Every group with its faces, each face labelled by the photo it was found in.
fn groups(addr: &str, label: &HashMap<String, String>) -> Groups {
    let r = get(addr, &format!("{AT}/groups?limit=1000"));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut out = Groups::new();
    for g in r.json()["groups"].as_array().unwrap() {
        let id = g["id"].as_i64().unwrap();
        let r = get(addr, &format!("{AT}/groups/{id}/faces"));
        assert_eq!(r.status, 200, "{}", r.text());
        let faces: Vec<(i64, String)> = r.json()["faces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let file = f["filename"].as_str().unwrap();
                (f["id"].as_i64().unwrap(), label[file].clone())
            })
            .collect();
        assert_eq!(faces.len() as u64, g["faces"].as_u64().unwrap(), "{g}");
        assert_eq!(
            faces.iter().map(|f| f.0).min(),
            Some(id),
            "a group's id is its first face"
        );
        let shown = g["shown"].as_array().unwrap();
        assert!(!shown.is_empty() && shown.len() <= 4, "{g}");
        for s in shown {
            assert!(faces.iter().any(|f| Some(f.0) == s.as_i64()), "{g}");
        }
        out.insert(id, faces);
    }
    out
}

/// The labels of a group's faces.
fn labels(faces: &[(i64, String)]) -> BTreeSet<String> {
    faces.iter().map(|f| f.1.clone()).collect()
}

/// Waits until `done` holds of the groups (re-tagging runs in the background).
fn wait_for(addr: &str, label: &HashMap<String, String>, done: impl Fn(&Groups) -> bool) -> Groups {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let g = groups(addr, label);
        if done(&g) {
            return g;
        }
        assert!(Instant::now() < until, "not within 20 s: {g:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn unknown_faces_are_grouped_into_people_named_merged_split_and_rejected() {
    let server = Server::start(&[]);
    let addr = server.addr.as_str();
    assert_eq!(
        http(addr, "PUT", AT, &[], b"").status,
        201,
        "the collection is made"
    );
    // No one enrolled: every face of the job is unknown. The five Johns of the labelled
    // evaluation faces, eleven photos each, one face a photo.
    let photos = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    let mut label: HashMap<String, String> = HashMap::new();
    for row in eval_rows().iter().filter(|r| r.image.starts_with("johns/")) {
        let name = row.image.replace('/', "__");
        std::fs::copy(eval_dir().join(&row.image), photos.path().join(&name)).unwrap();
        label.insert(name.clone(), row.identity.clone());
        names.push(name);
    }
    assert_eq!(names.len(), 55);
    let tar = python_tar(photos.path(), &names);
    let r = http(
        addr,
        "POST",
        &format!("{AT}/batches"),
        &[("content-type", "application/x-tar")],
        &tar,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let job = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(batch_results(addr, &job, &[]).len(), 55);

    // Each group is one person, and each person one group.
    let found = groups(addr, &label);
    let listing = get(addr, &format!("{AT}/groups")).json();
    assert_eq!(listing["total"].as_u64(), Some(found.len() as u64));
    for faces in found.values() {
        assert_eq!(labels(faces).len(), 1, "one person per group: {faces:?}");
    }
    let mut people: BTreeMap<String, usize> = BTreeMap::new();
    for faces in found.values() {
        *people.entry(faces[0].1.clone()).or_default() += 1;
    }
    assert!(
        people.values().all(|&n| n == 1),
        "one group per person: {people:?}"
    );
    assert_eq!(people.len(), 5, "{people:?}");
    assert_eq!(listing["faces"]["grouped"], 55, "{listing}");
    // The command line lists the same groups from the store.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facerec"))
        .args(["faces", "--collection", "people", "--data"])
        .arg(server.data())
        .arg("groups")
        .env("FACEREC_MODELS", facerec_testkit::models_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Groups = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let members = v["members"].as_array().unwrap();
            let faces: Vec<(i64, String)> = members
                .iter()
                .map(|m| {
                    let id = m.as_i64().unwrap();
                    (
                        id,
                        found
                            .values()
                            .flatten()
                            .find(|f| f.0 == id)
                            .unwrap()
                            .1
                            .clone(),
                    )
                })
                .collect();
            (v["id"].as_i64().unwrap(), faces)
        })
        .collect();
    assert_eq!(listed, found);
    let mut ids: Vec<i64> = found.keys().copied().collect();
    ids.sort_by_key(|id| std::cmp::Reverse(found[id].len()));

    // Bad input: an unknown group, a malformed body, a face of another group.
    assert_eq!(get(addr, &format!("{AT}/groups/999999/faces")).status, 404);
    assert_eq!(get(addr, &format!("{AT}/groups/x/faces")).status, 400);
    assert_eq!(
        post(
            addr,
            &format!("{AT}/groups/999999/name"),
            &json!({"name": "X"})
        )
        .status,
        404
    );
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    assert_eq!(
        post(addr, &format!("{AT}/groups/{a}/name"), &json!({"name": ""})).status,
        400
    );
    assert_eq!(
        post(
            addr,
            &format!("{AT}/groups/{a}/name"),
            &json!({"title": "X"})
        )
        .status,
        400
    );
    let other_face = found[&b][0].0;
    assert_eq!(
        post(
            addr,
            &format!("{AT}/groups/{a}/split"),
            &json!({"faces": [other_face]})
        )
        .status,
        404
    );
    assert_eq!(
        post(
            addr,
            &format!("{AT}/groups/{a}/merge"),
            &json!({"group": a})
        )
        .status,
        400
    );

    // Merge two people, then split them apart again by their faces.
    let r = post(
        addr,
        &format!("{AT}/groups/{b}/merge"),
        &json!({"group": c}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let merged = r.json()["id"].as_i64().unwrap();
    assert_eq!(merged, b.min(c));
    let now = groups(addr, &label);
    assert_eq!(now[&merged].len(), found[&b].len() + found[&c].len());
    let second: Vec<i64> = now[&merged]
        .iter()
        .filter(|f| f.1 == found[&c][0].1)
        .map(|f| f.0)
        .collect();
    let r = post(
        addr,
        &format!("{AT}/groups/{merged}/split"),
        &json!({"faces": second}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let now = groups(addr, &label);
    assert_eq!(now[&b], found[&b]);
    assert_eq!(now[&c], found[&c]);

    // Reject a face: it leaves its group and never comes back.
    let gone = found[&c].last().unwrap().0;
    let r = post(
        addr,
        &format!("{AT}/groups/{c}/reject"),
        &json!({"faces": [gone]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let now = groups(addr, &label);
    let left = &now[&c];
    assert_eq!(left.len(), found[&c].len() - 1);
    assert!(!now.values().flatten().any(|f| f.0 == gone));

    // Name the largest group: its faces are enrolled, tagged by re-tagging, and leave.
    let person = found[&a][0].1.clone();
    let r = post(
        addr,
        &format!("{AT}/groups/{a}/name"),
        &json!({"name": person}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["added"].as_u64(), Some(found[&a].len() as u64));
    let now = groups(addr, &label);
    assert!(!now.contains_key(&a), "a named group is no more");
    // Re-tagging tags them with the name.
    let seen = format!("{AT}/identities/{}/appearances", person.replace(' ', "%20"));
    wait_for(addr, &label, |_| {
        let r = get(addr, &seen);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["appearances"].as_array().unwrap().len() == found[&a].len()
    });
    // A second group under an existing name: 409, unless merged into it.
    let d = ids[3];
    let r = post(
        addr,
        &format!("{AT}/groups/{d}/name"),
        &json!({"name": person}),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let r = post(
        addr,
        &format!("{AT}/groups/{d}/name"),
        &json!({"name": person, "merge": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // A group emptied by rejections is no more.
    let faces: Vec<i64> = now[&b].iter().map(|f| f.0).collect();
    let r = post(
        addr,
        &format!("{AT}/groups/{b}/reject"),
        &json!({"faces": faces}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], Value::Null);
    assert_eq!(get(addr, &format!("{AT}/groups/{b}/faces")).status, 404);

    // The job's faces forgotten: its groups go with them.
    let r = http(
        addr,
        "DELETE",
        &format!("{AT}/batches/{job}/faces"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let now = groups(addr, &label);
    assert!(now.is_empty(), "{now:?}");
}
