package main

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/kelseyhightower/envconfig"
)

// loadConfig fills a Config from getenv, honouring the envconfig tags and
// defaults of its fields. envconfig.Process reads the process environment
// itself; reading through getenv keeps run's environment explicit (tests
// and embedding programs configure the program they run), while envconfig
// still documents the variables (wes --help) and decodes Seconds.
func loadConfig(getenv func(string) string) (Config, error) {
	var cfg Config
	v := reflect.ValueOf(&cfg).Elem()
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("envconfig")
		if key == "" {
			continue
		}
		raw := getenv(key)
		if raw == "" {
			raw = f.Tag.Get("default")
		}
		if raw == "" {
			continue
		}
		if err := setField(v.Field(i), raw); err != nil {
			return cfg, fmt.Errorf("%s=%q: %w", key, raw, err)
		}
	}
	return cfg, cfg.check()
}

func setField(fv reflect.Value, raw string) error {
	if d, ok := fv.Addr().Interface().(envconfig.Decoder); ok {
		return d.Decode(raw)
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(raw)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("not an integer")
		}
		fv.SetInt(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("not true or false")
		}
		fv.SetBool(b)
	case reflect.Slice:
		var parts []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		fv.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported field kind %s", fv.Kind())
	}
	return nil
}

// check refuses settings that would be taken silently for something else.
func (c Config) check() error {
	var errs []error
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			errs = append(errs, fmt.Errorf("WES_PUBLIC_URL=%q: want scheme://host[:port], such as https://wes.example.org", c.PublicURL))
		}
	}
	if c.ExecutorSlots < 1 {
		errs = append(errs, fmt.Errorf("WES_EXECUTOR_SLOTS=%d: want at least 1", c.ExecutorSlots))
	}
	if c.EngineUser != "" && c.EngineUIDs != "" {
		errs = append(errs, errors.New("WES_ENGINE_USER and WES_ENGINE_UIDS are both set: give one (WES_ENGINE_UIDS, a user per run, also keeps runs from each other's files)"))
	}
	if c.MaxPageSize < 1 || c.DefaultPageSize < 1 {
		errs = append(errs, fmt.Errorf("WES_DEFAULT_PAGE_SIZE=%d, WES_MAX_PAGE_SIZE=%d: want at least 1 each", c.DefaultPageSize, c.MaxPageSize))
	} else if c.DefaultPageSize > c.MaxPageSize {
		errs = append(errs, fmt.Errorf("WES_DEFAULT_PAGE_SIZE=%d is over WES_MAX_PAGE_SIZE=%d", c.DefaultPageSize, c.MaxPageSize))
	}
	return errors.Join(errs...)
}
