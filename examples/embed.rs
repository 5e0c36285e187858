//! Embedding cads in a wgpu application that owns its device.
//!
//! The host creates its own instance, adapter, device and queue; cads borrows them through
//! `Gpu::from_device`, runs ops, and the host then keeps using the same device for its own work
//! (here a plain buffer copy and readback), showing that cads left it in a usable state.
//!
//! Run: `cargo run --release --example embed`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // --- host application: its own device ---
    let (device, queue) = pollster::block_on(async {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = wgpu::util::initialize_adapter_from_env_or_default(&instance, None)
            .await
            .map_err(|e| format!("host: no adapter ({e}). {}", cads::gpu::NO_ADAPTER_HINT))?;
        adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("host device"),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("host: device request failed: {e}"))
    })?;
    println!("host device on {}", device.adapter_info().name);

    // --- cads on the host's device ---
    let gpu = cads::Gpu::from_device(device.clone(), queue.clone());
    let x = cads::Tensor::parameter(&gpu, &[1.0, -2.0, 3.0, -4.0], &[4])?;
    let y = cads::ops::gelu(&cads::ops::scale(&x, 0.5)?)?;
    let loss = cads::ops::sum_all(&y)?;
    let grads = loss.backward()?;
    println!("cads: gelu(0.5 x) = {:?}", y.to_vec()?);
    println!(
        "cads: d/dx sum = {:?}",
        grads.get(&x).expect("x has a gradient").to_vec()?
    );

    // --- the host keeps using its device ---
    let data: [u32; 4] = [10, 20, 30, 40];
    let src = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host src"),
        size: 16,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let dst = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host dst"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&src, 0, bytemuck::cast_slice(&data));
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("host"),
    });
    enc.copy_buffer_to_buffer(&src, 0, &dst, 0, 16);
    queue.submit([enc.finish()]);
    dst.map_async(wgpu::MapMode::Read, .., |r| r.expect("host map"));
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let back: Vec<u32> = bytemuck::pod_collect_to_vec(&dst.get_mapped_range(..)?);
    assert_eq!(back, data, "host work after cads");
    println!("host: its own copy after cads ops read back {back:?}");
    Ok(())
}
