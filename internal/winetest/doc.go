// Package winetest proves the Windows build under Wine: TestWine
// cross-builds closewait.exe and the leak example server, runs both under
// Wine and checks list, check, serve --textfile and test against the
// server's real CLOSE_WAIT sockets. It has no code of its own.
package winetest
