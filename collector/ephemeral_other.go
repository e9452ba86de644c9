//go:build !linux

package collector

// readEphemeralPorts is the IANA dynamic range, which Windows and macOS
// pick client ports from unless an administrator changed it.
func readEphemeralPorts(string) portRange { return portRange{49152, 65535} }
