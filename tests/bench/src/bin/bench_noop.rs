//! A binary module that does nothing and says so: the floor of a binary-module task in
//! Ansible (row 1), which every binary module pays for its copy, its arguments file and its run.

fn main() {
    println!(r#"{{"changed": false, "msg": "no-op"}}"#);
}
