//go:build tools

// Package deps pins modules that are used by tests or by code not yet written,
// so that go mod tidy keeps them.
package deps

import (
	_ "github.com/cockroachdb/pebble/v2"
	_ "github.com/eclipse/paho.golang/paho"
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/klauspost/compress/s2"
	_ "github.com/panjf2000/gnet/v2"
	_ "gopkg.in/yaml.v3"
)
