package collector

import (
	"os"
	"strconv"
	"strings"
)

// readEphemeralPorts reads the range that connect() picks local ports
// from, in procRoot's network namespace.
func readEphemeralPorts(procRoot string) portRange {
	b, err := os.ReadFile(procRoot + "/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return portRange{}
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return portRange{}
	}
	lo, err1 := strconv.ParseUint(f[0], 10, 16)
	hi, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || lo == 0 || lo > hi {
		return portRange{}
	}
	return portRange{uint16(lo), uint16(hi)}
}
