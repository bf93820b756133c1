//! Scenario files: errors name the line and the field; the format round-trips the basics.

use hypha_sim::Scenario;

fn err(text: &str) -> String {
    Scenario::parse("t.toml", text)
        .expect_err("must not parse")
        .to_string()
}

#[test]
fn an_unknown_action_names_its_line() {
    let e = err("name = \"x\"\nnodes = 2\n\n[[step]]\nwait = true\n\n[[step]]\nfly = 3\n");
    assert!(e.starts_with("t.toml:7:"), "{e}");
    assert!(e.contains("exactly one action"), "{e}");
}

#[test]
fn a_bad_field_names_the_field() {
    let e = err("name = \"x\"\nnodes = 2\n[[step]]\nconnect = [0, 5]\n");
    assert!(
        e.contains("t.toml:3:") && e.contains("host 5 does not exist"),
        "{e}"
    );
    let e = err("name = \"x\"\nnodes = 2\n[[step]]\ncreate = \"Users\"\non = 0\n");
    assert!(e.contains("`doc` is missing"), "{e}");
    let e = err("name = \"x\"\nnodes = 2\n[[step]]\nwait = true\nbogus = 1\n");
    assert!(e.contains("`bogus` is not a field of `wait`"), "{e}");
    let e = err("name = \"x\"\nnodes = 2\n[[step]]\nrun = \"5 parsecs\"\n");
    assert!(e.contains("`run`"), "{e}");
}

#[test]
fn a_toml_syntax_error_names_its_line() {
    let e = err("name = \"x\"\nnodes = 2\n[[step]]\nwait = \n");
    assert!(e.starts_with("t.toml:4"), "{e}");
}

#[test]
fn a_small_file_runs() {
    let s = Scenario::parse(
        "t.toml",
        r#"
name = "mine"
nodes = 2
[schemas]
U = "type Users { Name: String  Age: Int }"
[[step]]
schema = "U"
on = "all"
[[step]]
replicator = [0, 1]
[[step]]
create = "Users"
on = 0
doc = { Name = "Ann", Age = 3 }
[[step]]
wait = true
[[step]]
expect = "Users"
on = 1
field = "Age"
values = [4]
"#,
    )
    .expect("parses");
    let out = s.run(s.options(3));
    assert!(!out.passed, "a wrong expectation fails");
    assert!(
        out.failures[0].contains("line 17") && out.failures[0].contains("[3]"),
        "{:?}",
        out.failures
    );
}
