package harness

// flow is one connection on loopback by its ports: the client's
// ephemeral port and the server's port.
type flow struct{ client, server uint16 }

// tablePrefix names the nftables tables the harness creates, one per
// run: tablePrefix + pid + "_" + sequence. A table whose pid is gone was
// left by a killed run and is removed by the next one.
const tablePrefix = "closewait_test_"
