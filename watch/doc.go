// Package watch is closewait's live view: which processes hold sockets in
// CLOSE_WAIT, how fast their count grows, and when they will run out of
// file descriptors.
//
// Model holds the state and computes rows, rates and forecasts with no
// terminal, so tests drive it directly. A feed brings the data: polls of a
// Source (collector.Poller) every interval, or, with the tracer, its
// events as they come and a poll now and then to catch what events cannot
// say. Terminal shows it full screen (bubbletea); Plain prints a text
// snapshot per interval for pipes and logs.
package watch
