use clap::Parser;

fn main() {
    let config = apiwitness_init_iptables::config::Config::parse();
    if let Err(failure) = apiwitness_init_iptables::run(&config) {
        eprintln!("apiwitness-init-iptables: {failure}");
        std::process::exit(failure.exit_code());
    }
}
