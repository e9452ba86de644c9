// Package harness drives a TCP server with clients that leave in every way
// real clients do, and proves from the server's own sockets that each one
// leaves CLOSE_WAIT within a deadline. It backs "closewait test" and the
// closewaittest package.
//
// A scenario opens its connections, finds each server-side socket by its
// 4-tuple in the socket table (the collector, filtered to the target
// port), lets the clients leave, and polls the table, one dump per tick
// for all connections, until every server socket has left ESTABLISHED and
// CLOSE_WAIT or its deadline has passed. The close latency runs from the
// client's FIN to the first dump where the socket is in neither state;
// its resolution is the poll interval plus one dump. A stuck socket is reported with the
// collector's cause (eof-not-closed, fin-not-read, ...), its owners and
// how long it waited.
//
// reset cannot leak by construction (the RST makes the kernel drop the
// server socket); it is measured like the others, so a socket that stays
// anyway fails it, and a server that dies of the RST fails it when the
// harness started the server. dead-peer drops both directions of each
// connection on loopback with an nftables rule in a table of its own,
// closes the client, and waits for the server socket to leave ESTABLISHED
// (keepalive, TCP_USER_TIMEOUT or an application timeout).
//
// The server must run on this host, in this network namespace: its
// sockets are read from the kernel, not inferred from the client side.
package harness
