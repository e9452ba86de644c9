package collector

import (
	"fmt"
	"time"
)

// Windows keeps a socket's own keepalive timers (SIO_KEEPALIVE_VALS) out
// of reach of other processes; only the system defaults can be shown.
// These are the defaults when the registry does not set them.
const (
	WindowsKeepAliveTime     = 2 * time.Hour
	WindowsKeepAliveInterval = time.Second
)

// readTcpipParameter reads a DWORD value under
// HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters; nil off Windows.
var readTcpipParameter func(name string) (uint32, error)

// KeepaliveDefaultsNote says, on Windows, which keepalive timers a socket
// gets unless its application sets its own; "" elsewhere.
func KeepaliveDefaultsNote() string {
	if readTcpipParameter == nil {
		return ""
	}
	return keepaliveDefaultsNote(readTcpipParameter)
}

func keepaliveDefaultsNote(read func(string) (uint32, error)) string {
	value := func(name string, def time.Duration) string {
		ms, err := read(name)
		if err != nil {
			return fmt.Sprintf("%s %v (default)", name, def)
		}
		return fmt.Sprintf("%s %v (registry)", name, time.Duration(ms)*time.Millisecond)
	}
	return "Windows keepalive defaults: " + value("KeepAliveTime", WindowsKeepAliveTime) + ", " +
		value("KeepAliveInterval", WindowsKeepAliveInterval) +
		"; they apply only to sockets with keepalive on, and a socket's own SIO_KEEPALIVE_VALS cannot be read" +
		" from outside its process: the application must turn keepalive on and set its own timers"
}
