// Command etcd is etcd's own server command (go.etcd.io/etcd/server/v3/etcdmain), built from the
// published module: the etcd repository's main package lives in a module of its own whose
// go.mod replaces its sibling modules with relative paths, so it cannot be installed directly.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
